"""Settings of the benchmarks: the project's settings, on a database and a Redis key prefix of their own.

Everything is a default: the environment still wins. ``rest_framework.authtoken`` (the
TokenAuthentication baseline) and the plain view (bench/urls.py) exist only here.
"""

import os

# Always our own database and key prefix (BENCH_* to choose others): never the tests' or anyone's.
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/memora_bench")
os.environ["MEMORA_REDIS_KEY_PREFIX"] = os.environ.get("BENCH_REDIS_KEY_PREFIX", "membench")
# Production mode on plain http (DEBUG would keep every query in memory).
os.environ["DJANGO_DEBUG"] = "0"
os.environ["DJANGO_SECURE"] = "0"
# Never deployed: the benchmarks' own processes on loopback only.
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-never-deployed-4b1d9c0e7a6f5e3d2c1b0a99")
os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
# The load must not be refused by the per-student and per-IP limits.
os.environ.setdefault("MEMORA_RATE_LESSONS_PLAYER", "100000000")
os.environ.setdefault("MEMORA_RATE_LOGIN_IP", "100000000")
os.environ.setdefault("MEMORA_RATE_REGISTER_IP", "100000000")

from memora_project.settings import *  # noqa: F403
from memora_project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework.authtoken"]
ROOT_URLCONF = "bench.urls"

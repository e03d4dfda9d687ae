"""Settings, all from the environment.

Every product rule is a ``MEMORA_*`` setting with the design's default. Secrets have no default
outside debug mode.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from core.redisconn import IdentityConnection, SentinelIdentityConnection

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

if DEBUG:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-development-key-only-for-debug-mode-0123456789")
else:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # The kernel (imports no app), the three apps, and the composition app that spans them.
    "core",
    "players",
    "devices",
    "wallets",
    "memora",
]

MIDDLEWARE = [
    "core.middleware.ApiGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "devices.middleware.DeviceSessionMiddleware",
]

ROOT_URLCONF = "memora_project.urls"
WSGI_APPLICATION = "memora_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
# SQLite is only the embedded default of `make run`; production and the tests use MariaDB.
# Local state of `make run` (SQLite file, static files, embedded Redis log, beat schedule).
MEMORA_VAR_DIR = Path(env.str("MEMORA_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{MEMORA_VAR_DIR / 'memora.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # The web process, the worker and beat share the file: serialize writers instead of failing.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _db["CONN_MAX_AGE"] = 0
else:
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"].setdefault("charset", "utf8mb4")
    _db["OPTIONS"].setdefault("connect_timeout", env.int("MEMORA_DB_CONNECT_TIMEOUT", default=2))
    # Persistent connections: opening one costs ~0.7 ms and halved throughput (DESIGN, Numbers).
    _db["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=300)
    _db["CONN_HEALTH_CHECKS"] = True
    _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis ----------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
MEMORA_REDIS_TIMEOUT = env.float("MEMORA_REDIS_TIMEOUT", default=0.1)
MEMORA_REDIS_KEY_PREFIX = env.str("MEMORA_REDIS_KEY_PREFIX", default="mem")
MEMORA_REDIS_SHARDS = env.int("MEMORA_REDIS_SHARDS", default=1024)
# "redis" (default) or "database": force the Redis-down path everywhere.
MEMORA_HOT_STATE = env.str("MEMORA_HOT_STATE", default="redis")
MEMORA_BREAKER_FAILURES = env.int("MEMORA_BREAKER_FAILURES", default=3)
MEMORA_BREAKER_RESET_SECONDS = env.float("MEMORA_BREAKER_RESET_SECONDS", default=1.0)

# Beyond one machine (DESIGN v3): a Sentinel set names the master (instead of REDIS_URL), or
# REDIS_URL names any node of a Redis Cluster (hotstate builds the Cluster client).
MEMORA_REDIS_SENTINELS = env.list("MEMORA_REDIS_SENTINELS", default=[])
MEMORA_REDIS_SENTINEL_SERVICE = env.str("MEMORA_REDIS_SENTINEL_SERVICE", default="")
MEMORA_REDIS_CLUSTER = env.bool("MEMORA_REDIS_CLUSTER", default=False)


def _sentinel_address(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ImproperlyConfigured(f"MEMORA_REDIS_SENTINELS: {value!r} is not host:port")
    return host.strip("[]"), int(port)


def redis_cache(
    location: str, *, sentinels: list[tuple[str, int]] | None = None, timeout: float = MEMORA_REDIS_TIMEOUT
) -> dict[str, Any]:
    """The default cache's settings: django-redis with connections that know their server's
    identity (see redisconn); under Sentinel, ``location`` is ``redis://<service>/<db>``."""
    options: dict[str, Any] = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "SOCKET_CONNECT_TIMEOUT": timeout,
        "SOCKET_TIMEOUT": timeout,
        "CONNECTION_POOL_KWARGS": {"max_connections": 64, "health_check_interval": 0},
    }
    if sentinels:
        options["CONNECTION_FACTORY"] = "django_redis.pool.SentinelConnectionFactory"
        options["SENTINELS"] = sentinels
        options["CONNECTION_POOL_KWARGS"]["connection_class"] = SentinelIdentityConnection
    elif location.startswith("redis://"):  # a plain TCP URL (not unix:// or rediss://)
        options["CONNECTION_POOL_KWARGS"]["connection_class"] = IdentityConnection
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "KEY_PREFIX": f"{MEMORA_REDIS_KEY_PREFIX}:cache",
        "OPTIONS": options,
    }


if MEMORA_REDIS_SENTINELS:
    if not MEMORA_REDIS_SENTINEL_SERVICE:
        raise ImproperlyConfigured("MEMORA_REDIS_SENTINELS needs MEMORA_REDIS_SENTINEL_SERVICE (the master's name)")
    if MEMORA_REDIS_CLUSTER:
        raise ImproperlyConfigured("MEMORA_REDIS_SENTINELS and MEMORA_REDIS_CLUSTER exclude each other")
    _redis_db = urlsplit(REDIS_URL).path.strip("/") or "0"
    CACHES = {
        "default": redis_cache(
            f"redis://{MEMORA_REDIS_SENTINEL_SERVICE}/{_redis_db}",
            sentinels=[_sentinel_address(s) for s in MEMORA_REDIS_SENTINELS],
        )
    }
else:
    CACHES = {"default": redis_cache(REDIS_URL)}

# --- Celery ---------------------------------------------------------------------------------------
# The broker is always a plain Redis (kombu follows neither a Sentinel failover of our hot state nor a
# Cluster's slots): with Sentinel or Cluster it must be named.
if MEMORA_REDIS_SENTINELS or MEMORA_REDIS_CLUSTER:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
else:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_TIMEOUT = 1.0
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "max_retries": 0}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TIMEZONE = "UTC"

# --- Auth -----------------------------------------------------------------------------------------
PASSWORD_HASHERS = [
    "players.hashers.MemoraArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = MEMORA_VAR_DIR / "staticfiles"

# --- HTTP limits ----------------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
MEMORA_MAX_BODY_BYTES = 64 * 1024
MEMORA_MAX_HEADER_BYTES = 4096

# --- Security -------------------------------------------------------------------------------------
DJANGO_SECURE = env.bool("DJANGO_SECURE", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if DJANGO_SECURE:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- DRF ------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "devices.authentication.DeviceSessionAuthentication",
        "devices.authentication.ServiceKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["players.permissions.IsStudent"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.openapi.MemoraAutoSchema",
    "UNAUTHENTICATED_USER": None,
    # OPTIONS is not part of the API: answer it 405 like any other method it does not list.
    "DEFAULT_METADATA_CLASS": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Memora Player Core API",
    "DESCRIPTION": (
        "Identity, device authorization, single session and rewards for the Memora app.\n\n"
        "A student's requests carry `Authorization: Bearer <token>` (from login) and `X-Device-ID: <uuid4>`; "
        "a service sends `Authorization: Api-Key <key>`. Every error is JSON `{code, detail}` plus the fields "
        "its code names (`errors`, `reason`, `next_allowed_at`, `retry_after`, `devices`); 429 and 503 also "
        "send `Retry-After`. No string field admits U+0000 or a lone surrogate (400 `validation_error`)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI and its assets are served from this process: no CDN on a school intranet or offline,
    # and no call to the public swagger.io validator.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "persistAuthorization": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "TAGS": [
        {"name": "auth", "description": "Register, log in on a device, log out."},
        {"name": "session", "description": "The live session of this device."},
        {"name": "profile", "description": "The student's profile and time zone."},
        {"name": "devices", "description": "The devices authorized on the account."},
        {"name": "wallet", "description": "XP, the daily streak and the ledger of awards."},
    ],
    "ENUM_NAME_OVERRIDES": {},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums"],
}

# --- Product rules --------------------------------------------------------------------------------
MEMORA_REGISTRATION_OPEN = env.bool("MEMORA_REGISTRATION_OPEN", default=True)
MEMORA_MAX_DEVICES = env.int("MEMORA_MAX_DEVICES", default=2)
MEMORA_DEVICE_REMOVAL_COOLDOWN = env.int("MEMORA_DEVICE_REMOVAL_COOLDOWN", default=30 * 24 * 3600)
MEMORA_DEVICE_LIMIT_POLICY = env.str("MEMORA_DEVICE_LIMIT_POLICY", default="refuse")
MEMORA_SESSION_LIFETIME = env.int("MEMORA_SESSION_LIFETIME", default=30 * 24 * 3600)
MEMORA_SESSION_IDLE_TIMEOUT = env.int("MEMORA_SESSION_IDLE_TIMEOUT", default=7 * 24 * 3600)
MEMORA_LAST_SEEN_WRITE_INTERVAL = env.int("MEMORA_LAST_SEEN_WRITE_INTERVAL", default=60)
MEMORA_TIMEZONE_CHANGE_COOLDOWN = env.int("MEMORA_TIMEZONE_CHANGE_COOLDOWN", default=7 * 24 * 3600)

MEMORA_XP_LESSON_BASE = env.int("MEMORA_XP_LESSON_BASE", default=10)
MEMORA_XP_PERFECT_BONUS = env.int("MEMORA_XP_PERFECT_BONUS", default=5)
MEMORA_XP_DAILY_CAP = env.int("MEMORA_XP_DAILY_CAP", default=200)
MEMORA_XP_MANUAL_MAX = env.int("MEMORA_XP_MANUAL_MAX", default=10000)
MEMORA_IDEMPOTENCY_TTL = env.int("MEMORA_IDEMPOTENCY_TTL", default=24 * 3600)
MEMORA_STREAK_FREEZE_EVERY = env.int("MEMORA_STREAK_FREEZE_EVERY", default=7)
MEMORA_STREAK_FREEZE_MAX = env.int("MEMORA_STREAK_FREEZE_MAX", default=2)
MEMORA_FLUSH_INTERVAL = env.int("MEMORA_FLUSH_INTERVAL", default=600)
MEMORA_FLUSH_CHUNK = env.int("MEMORA_FLUSH_CHUNK", default=500)
MEMORA_FLUSH_LEASE = env.int("MEMORA_FLUSH_LEASE", default=300)
# Beat's flush sends one task per range of shards, this many ranges: up to this many workers flush
# in parallel (wallets.fanout).
MEMORA_FLUSH_FANOUT = env.int("MEMORA_FLUSH_FANOUT", default=16)
# Test hook only: stop after writing chunk k and wait on a Redis key (see wallets.flush).
MEMORA_FLUSH_BARRIER_AFTER_CHUNK = env.int("MEMORA_FLUSH_BARRIER_AFTER_CHUNK", default=0)
# How often beat sweeps the outbox (each process also runs its own reconciler thread every second).
MEMORA_RECONCILE_SWEEP_INTERVAL = env.int("MEMORA_RECONCILE_SWEEP_INTERVAL", default=30)

# The beat schedule, declared in one place, from the interval settings.
CELERY_BEAT_SCHEDULE = {
    "persist-last-seen": {
        "task": "devices.tasks.persist_last_seen",
        "schedule": float(MEMORA_LAST_SEEN_WRITE_INTERVAL),
    },
    "flush-wallets": {"task": "wallets.tasks.flush_wallets", "schedule": float(MEMORA_FLUSH_INTERVAL)},
    "reconcile-outbox": {"task": "memora.tasks.reconcile_outbox", "schedule": float(MEMORA_RECONCILE_SWEEP_INTERVAL)},
}

# Rate limits: (limit, window seconds). Lockouts last MEMORA_LOGIN_LOCK_SECONDS.
MEMORA_RATE_LOGIN_FAILURES_USER_IP = (env.int("MEMORA_RATE_LOGIN_FAILURES_USER_IP", default=10), 15 * 60)
MEMORA_LOGIN_LOCK_SECONDS = env.int("MEMORA_LOGIN_LOCK_SECONDS", default=15 * 60)
MEMORA_RATE_LOGIN_FAILURES_USER = (env.int("MEMORA_RATE_LOGIN_FAILURES_USER", default=100), 3600)
# A login that proves its device (device proof; the admin's staff device cookie) meets only this.
MEMORA_RATE_LOGIN_FAILURES_USER_DEVICE = (env.int("MEMORA_RATE_LOGIN_FAILURES_USER_DEVICE", default=10), 15 * 60)
# Requests refused 401 for unknown credentials, per address (/64): then 429 for those only.
MEMORA_RATE_UNKNOWN_CREDENTIALS = (env.int("MEMORA_RATE_UNKNOWN_CREDENTIALS", default=300), 10 * 60)
# Lesson completions per student per local day; past it 429 and nothing is written.
MEMORA_LESSONS_PER_DAY = env.int("MEMORA_LESSONS_PER_DAY", default=500)
# How long an admin browser is held only to its own login counter after signing in.
MEMORA_STAFF_DEVICE_COOKIE_AGE = env.int("MEMORA_STAFF_DEVICE_COOKIE_AGE", default=30 * 24 * 3600)
MEMORA_RATE_LOGIN_IP = (env.int("MEMORA_RATE_LOGIN_IP", default=600), 600)
MEMORA_RATE_REGISTER_IP = (env.int("MEMORA_RATE_REGISTER_IP", default=20), 3600)
MEMORA_RATE_LESSONS_PLAYER = (env.int("MEMORA_RATE_LESSONS_PLAYER", default=60), 60)
MEMORA_RATE_SERVICE_KEY = (env.int("MEMORA_RATE_SERVICE_KEY", default=100), 1)
MEMORA_TRUSTED_PROXIES = env.list("MEMORA_TRUSTED_PROXIES", default=[])
for _proxy in MEMORA_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy.strip(), strict=False)
    except ValueError as _exc:
        # Fail at start, not with a 500 on every request.
        raise ImproperlyConfigured(f"MEMORA_TRUSTED_PROXIES: {_proxy!r} is not an address or network") from _exc

MEMORA_METRICS_TOKEN = env.str("MEMORA_METRICS_TOKEN", default="")
# The reconciler thread rebuilds students listed in the outbox once Redis answers again.
MEMORA_RECONCILER_INTERVAL = env.float("MEMORA_RECONCILER_INTERVAL", default=1.0)
MEMORA_RECONCILER_ENABLED = env.bool("MEMORA_RECONCILER_ENABLED", default=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

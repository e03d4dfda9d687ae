"""py-spy beside a measured run: the gunicorn workers' stacks sampled while wrk drives them, summed
into the entries a reader needs (how much of the time is the Argon2 hash, the database, Redis, and
the top functions by their own and their inclusive samples).

py-spy samples the running workers from outside (``--nonblocking``: they are never paused, so the
run's figures stay the run's); it needs ptrace rights over them (root, or the same user with
``kernel.yama.ptrace_scope`` 0). Without py-spy the run goes on unprofiled.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# Frames whose presence in a stack puts the sample in one bucket (the first that matches wins).
BUCKETS = (
    ("argon2 hash", ("argon2", "hashers.py:verify", "check_password")),
    ("MariaDB (client + driver)", ("MySQLdb", "django/db/backends")),
    ("Redis (redis-py)", ("redis/",)),
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if os.path.exists(found) else None


def start(*, master_pid: int, seconds: float, output: Path, rate: int = 200) -> subprocess.Popen[bytes] | None:
    """Sample the master and its workers for ``seconds``; None when py-spy is not installed."""
    binary = py_spy()
    if binary is None:
        return None
    argv = [binary, "record", "--pid", str(master_pid), "--subprocesses", "--nonblocking", "--nolineno"]
    argv += ["--rate", str(rate), "--duration", str(max(1, int(seconds))), "--format", "raw", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[bytes] | None, output: Path, *, requests: int, top: int = 12) -> dict[str, Any]:
    if proc is None:
        return {"error": "py-spy not found"}
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not output.exists():
        return {"error": f"py-spy wrote nothing (exit {proc.returncode}: root or ptrace rights needed)"}
    summary = summarize(output.read_text().splitlines(), top=top)
    summary["file"] = str(output)
    summary["samples_per_request"] = round(summary["samples"] / max(1, requests), 2)
    return summary


def _function(frame: str) -> str:
    """``name (path/file.py)`` → ``file.py:name`` with the package path kept short."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    parts = where.split("/")
    return f"{'/'.join(parts[-2:])}:{name}" if where else name


def summarize(lines: list[str], *, top: int = 12) -> dict[str, Any]:
    """Sum py-spy's raw (collapsed) stacks: per bucket, top self and top inclusive functions."""
    total = 0
    buckets: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f.strip()]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        functions = [_function(f) for f in frames]
        own[functions[-1]] += count
        for name in set(functions):
            inclusive[name] += count
        joined = ";".join(frames)
        bucket = next((label for label, marks in BUCKETS if any(m in joined for m in marks)), "other Python")
        buckets[bucket] += count

    def share(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "pct": round(100 * n / max(1, total), 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "buckets": {
            label: round(100 * buckets[label] / max(1, total), 1) for label, _ in (*BUCKETS, ("other Python", ()))
        },
        "top_self": share(own),
        "top_inclusive": share(inclusive),
    }

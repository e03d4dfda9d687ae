"""The flush's decoding alone on 100,000 events like the award script's, in one process, best of
three (no database, no Redis): ``wallets.events.decode`` (the flush's path, straight into the
ledger row) and, for the record, the typed ``PendingEvent.from_redis`` + ``.row`` (the dead-letter
retry's). A tree without ``decode`` (before this work) times the second only.

    PYTHONPATH=. DJANGO_DEBUG=1 .venv/bin/python bench/decode.py LABEL

Run it from two trees (this one and a copy of another commit) one after the other to compare them
on the same machine at the same time; docs/NARROW_LEDGER.md shows such a comparison.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memora_project.settings")


def _event(i: int, rng: random.Random) -> bytes:
    digest = hashlib.sha256(str(i).encode()).hexdigest()[:32]
    return json.dumps(
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "kind": "lesson",
            "amount": 10,
            "lesson_id": f"lesson-{i % 40}",
            "reason": "",
            "local_day": "2026-11-30",
            "accepted_at": f"{1.7e9 + i * 0.001:.6f}",
            "gen": 1,
            "version": i + 1,
            "xp_total_after": 10 * i,
            "xp_day_after": 10,
            "capped": False,
            "streak_after": 3,
            "longest_after": 9,
            "last_day_after": "2026-11-30",
            "freezes_after": 1,
            "break_after": 0,
            "idem": digest,
            "fp": hashlib.md5(digest.encode(), usedforsecurity=False).hexdigest(),
            "req": "",
            "actor": "",
        }
    ).encode()


def main() -> None:
    import django

    django.setup()
    from wallets import events

    rng = random.Random(1)
    raws = [_event(i, rng) for i in range(100_000)]
    kwargs: dict[str, object] = {"native_uuid": True}
    if "flushed_at" in inspect.signature(events.PendingEvent.row).parameters:  # the layout before 0006
        kwargs["flushed_at"] = "2026-11-30 00:00:00.000000"
    timed: dict[str, Callable[[bytes], object]] = {
        "from_redis + row": lambda raw: events.PendingEvent.from_redis(1, raw).row(**kwargs)
    }
    decode = getattr(events, "decode", None)
    if decode is not None:
        timed = {"decode": lambda raw: decode(1, raw, native_uuid=True), **timed}
    label = sys.argv[1] if len(sys.argv) > 1 else "decode"
    for name, fn in timed.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for raw in raws:
                fn(raw)
            best = min(best, time.perf_counter() - t0)
        print(f"{label}: {name} {best * 1e6 / len(raws):.1f} us/event (best of 3, {len(raws):,} events)")


if __name__ == "__main__":
    main()

"""The flush's decoding alone on 100,000 events like the award script's, in one process, best of
three (no database, no Redis): ``wallets.events.decode`` (the flush's path, straight into the
ledger row) and, for the record, the typed ``PendingEvent.from_redis`` + ``.row`` (the dead-letter
retry's). A tree without ``decode`` (before this work) times the second only.

    PYTHONPATH=. DJANGO_DEBUG=1 .venv/bin/python bench/decode.py LABEL

Run it from two trees (this one and a copy of another commit) one after the other to compare them
on the same machine at the same time; docs/NARROW_LEDGER.md shows such a comparison.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import random
import sys
import time
from collections.abc import Callable

from bench import common

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memora_project.settings")


def main() -> None:
    import django

    django.setup()
    from wallets import events

    rng = random.Random(1)
    day = dt.date(2026, 11, 30)
    raws = [json.dumps(common.pending_event(1, i, day, 1.7e9 + i * 0.001, rng)).encode() for i in range(100_000)]
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

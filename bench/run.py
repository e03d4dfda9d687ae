#!/usr/bin/env python3
"""Run the benchmark parts, each in its own process, then write docs/BENCHMARKS.md.

    bench/run.py                     # verification, load, flush, growth, ledger_size, fanout, report (~25 min)
    bench/run.py flush report        # some parts
    bench/run.py --big               # also the opt-in growth point of 100,000 dirty students
    bench/run.py load -- --rounds 2  # arguments after -- go to every part named

Each part also runs alone: ``python -m bench.<part> --help``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("verification", "load", "flush", "growth", "ledger_size", "fanout", "report")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", help=f"parts to run, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--big", action="store_true", help="add the 100,000-student growth point")
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)
    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}: choose from {', '.join(PARTS)}")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    started = time.monotonic()
    for part in parts:
        part_args = list(extra)
        if part == "growth" and args.big and "--cases" not in part_args:
            part_args += ["--cases", "5000x20,20000x20,100000x20"]
        print(f"=== bench {part} {' '.join(part_args)}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{part}", *part_args], cwd=ROOT, env=env)
        print(f"=== bench {part}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code != 0:
            return code
    print(f"=== bench: all done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

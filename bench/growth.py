"""Part 5, the flush half: flush time and peak memory as the number of dirty students grows.

The same measurement as bench/flush.py (seed through the award path, ``wallet_flush()`` in a fresh
child process, its peak RSS), without the floor and the baseline. ``make bench`` takes the 50,000
point from the flush part of the same run; the 100,000 point is opt-in (``--cases`` or
``make bench BENCH_BIG=1``). The verification half (1k and 100k students in Redis) is in
bench/verification.py.

    python -m bench.growth [--cases 5000x20,20000x20]
"""

from __future__ import annotations

import sys
from typing import Any

from bench import flush


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return flush.main(argv if argv is not None else sys.argv[1:], part="growth", defaults="5000x20,20000x20")


if __name__ == "__main__":
    main()

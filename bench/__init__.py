"""Benchmarks of the design's numbers (DESIGN.md, "Numbers the design must reach").

Run everything with ``make bench`` (writes docs/BENCHMARKS.md) or one part with
``python -m bench.<part>`` / ``bench/run.py <part>``; see bench/run.py.
"""

# ruff: noqa: RUF001  (the report prints multiplication signs)
"""The targets table of bench/report.py: figures read from the parts' results, "not run" for a part
that did not run, met / not met computed from the figures given (no benchmark runs here)."""

from __future__ import annotations

import re
from typing import Any

from bench import report

MACHINE = {"nproc": 2, "ram_gib": 4.0, "mariadb": "10.11", "redis": "7.0.15", "python": "3.11"}


def part(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"part": name, "command": f"bench {name}", "started": "2026-12-01T10:00:00+00:00", "seconds": 1.0,
            "machine": MACHINE, "data": data}  # fmt: skip


def timing(p50: float, p99: float, mean: float) -> dict[str, float]:
    return {"n": 100, "p50_ms": p50, "p90_ms": p99, "p99_ms": p99, "max_ms": p99, "mean_ms": mean}


def verification(*, cluster_p99: float = 0.5, cluster_trips: float = 1.0) -> dict[str, Any]:
    one = {"redis_round_trips": 1.0, "db_queries": 0.0}
    single = {
        "verify": timing(0.2, 0.4, 0.25),
        "token_auth_plus_device": timing(1.0, 2.0, 1.1),
        "bare_evalsha": timing(0.1, 0.3, 0.12),
        "check_lua_only": timing(0.15, 0.35, 0.2),
    }
    cluster = {"verify": timing(0.3, cluster_p99, 0.5), "bare_evalsha": timing(0.15, 0.4, 0.2)}
    return part(
        "verification",
        {
            "students": 100,
            "calls": 100,
            "counts": {k: dict(one) for k in single},
            "timing": single,
            "verify_paths": {"cache": 100},
            "loadavg": [1.0, 1.0],
            "ratios": {
                "speedup_p50_vs_token_auth": 5.0,
                "speedup_mean_vs_token_auth": 4.4,
                "p99_over_evalsha_p99": 1.3,
            },
            "cluster": {
                "masters": 3,
                "students": 100,
                "students_per_node": {"a": 30, "b": 35, "c": 35},
                "pids": [1, 2, 3],
                "timing": cluster,
                "counts": {"verify": {"redis_round_trips": cluster_trips, "db_queries": 0.0}, "bare_evalsha": one},
                "versus_single": {"p50": 1.5, "p99": cluster_p99 / 0.4, "per_s": 0.5, "bare_evalsha_p50": 1.5},
            },
        },
    )


def ledger(bytes_per_event: float) -> dict[str, Any]:
    return part(
        "ledger_size",
        {"rows": 1000, "data_bytes": 200_000, "index_bytes": 76_000, "bytes_per_event": bytes_per_event,
         "per_index_bytes_per_event": {"PRIMARY": 200.0}, "insert_seconds": 1.0},
    )  # fmt: skip


def load(*, login_rps: float, lesson_rps: float) -> dict[str, Any]:
    runs = [
        {"round": r, "hot_state": "redis", "scenario": s, "rps": rps}
        for r in (1, 2)
        for s, rps in (("plain", 2000.0), ("wallet", 1000.0), ("lesson", lesson_rps))
    ]
    return part("load", {"runs": runs, "logins": {"rps": login_rps}, "hash": {"all_cores_per_s": 80.0, "processes": 2}})


def row(text: str, target: str) -> list[str]:
    """The cells of the targets table's row whose target starts with ``target``."""
    table = text.split("## Targets", 1)[1]
    found = [line for line in table.splitlines() if line.startswith(f"| {target}")]
    assert len(found) == 1, (target, found)
    return [cell.strip() for cell in found[0].strip("|").split(" | ")]


def test_parts_not_run_say_so_and_give_no_figure() -> None:
    text = report.render({"ledger_size": ledger(276.0)})
    for target in ("(v3) login", "(v3) flush of 50,000", "(v3) lesson", "(v3) flush on 2 workers", "(v3) verification"):
        cells = row(text, target)
        assert cells[-1] == "not run"
        assert cells[2].startswith("not run")
        assert not re.search(r"\d", cells[3])
    assert row(text, "GET /wallet/ p99")[-1] == "not run"
    assert "Parts not run for this report: verification, load, flush, growth, fanout." in text
    assert "The 100,000-student flush point: not run" not in text  # no flush point at all without those parts


def test_ledger_size_met_and_not_met() -> None:
    met = row(report.render({"ledger_size": ledger(276.0)}), "(v3) ledger size")
    assert met[-1] == "**met**"
    assert "276.0 B/event" in met[2]
    assert row(report.render({"ledger_size": ledger(351.0)}), "(v3) ledger size")[-1] == "**not met**"


def test_verification_on_the_cluster_met_and_not_met() -> None:
    text = report.render({"verification": verification()})
    cells = row(text, "(v3) verification on a 3-master")
    assert cells[-1] == "**met**"
    # The section's own rows once each (row() finds exactly one), judged from its figures.
    assert row(text, "verification p99 within 2×")[-1] == "**met**"
    assert row(text, "verification: Redis round trips")[-1] == "**met**"
    assert "p99 1.25×" in cells[3]
    slow = row(report.render({"verification": verification(cluster_p99=0.9)}), "(v3) verification on a 3-master")
    assert slow[-1] == "**not met**"
    two = row(report.render({"verification": verification(cluster_trips=2.0)}), "(v3) verification on a 3-master")
    assert two[-1] == "**not met**"


def test_login_and_lesson_ratios_from_the_load_part() -> None:
    # Only the targets are computed here: the load section itself is exercised by `make bench`.
    targets = report.Targets()
    report.login_target(load(login_rps=60.0, lesson_rps=900.0), targets)
    report.lesson_target(load(login_rps=60.0, lesson_rps=900.0), targets)
    report.login_target(load(login_rps=50.0, lesson_rps=800.0), targets)
    report.lesson_target(load(login_rps=50.0, lesson_rps=800.0), targets)
    verdicts = [(r[0][:10], r[3], r[4]) for r in targets.rows]
    assert verdicts == [
        ("(v3) login", "75 % of the hash rate", "**met**"),
        ("(v3) lesso", "per round: 90 % / 90 %", "**met**"),
        ("(v3) login", "62 % of the hash rate", "**not met**"),
        ("(v3) lesso", "per round: 80 % / 80 %", "**not met**"),
    ]


def test_a_result_without_its_figure_is_not_a_verdict() -> None:
    broken = ledger(276.0)
    del broken["data"]["bytes_per_event"]
    cells = row(report.render({"ledger_size": broken}), "(v3) ledger size")
    assert cells[-1] == "not measured"
    assert "no figure" in cells[2]


def test_the_v3_rows_follow_designs_order() -> None:
    text = report.render({"ledger_size": ledger(276.0), "verification": verification()})
    table = text.split("## Targets", 1)[1]
    v3 = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| (v3)")]
    assert [t.split()[2] for t in v3] == ["login", "ledger", "flush", "lesson", "flush", "verification"]


def test_the_fanout_sections_row_ranks_as_the_two_worker_target() -> None:
    ranks = [
        report._rank("(v3) flush of 50,000 × 20 ≤ 1.5× raw SQL"),
        report._rank("(v3) lesson completion ≥ 85 % of GET /wallet/'s throughput"),
        report._rank("(v3) flush of 10,000 × 20 on 2 workers ≥ 1.5× one worker, or raw SQL on 2 connections"),
    ]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == 3
    assert report._rank("0 errors under load") < min(ranks)


def test_a_part_run_without_a_rows_measurement_says_not_measured() -> None:
    flush = part("flush", {"chunk": 500, "cases": []})  # e.g. run with --sample 0 at no 50,000 case
    text = report.render({"flush": flush})
    cells = row(text, "wallet row writes")
    assert cells[-1] == "not measured"
    assert "not measured by this run" in cells[2]
    assert row(text, "(v3) flush of 50,000")[-1] == "not measured"

"""/metrics: Prometheus text, behind the metrics token, its figures moving with load and flush."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from core import metrics

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-me"
ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def scrape(api) -> dict[str, float]:
    response = api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def test_metrics_need_the_token(api, settings):
    settings.MEMORA_METRICS_TOKEN = TOKEN
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    settings.MEMORA_METRICS_TOKEN = ""
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401  # no token set: closed


def test_metrics_move_with_load_and_flush(api, student, settings):
    settings.MEMORA_METRICS_TOKEN = TOKEN
    settings.MEMORA_RATE_LESSONS_PLAYER = (3, 60)
    before = scrape(api)
    started = time.time()
    answers = [
        student.post(f"/api/v1/lessons/l{i}/complete/", {}, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex).status_code
        for i in range(4)
    ]
    assert answers == [201, 201, 201, 429]  # the fourth is refused by the per-student limit
    assert student.get("/api/v1/wallet/").status_code == 200
    during = scrape(api)
    since_first_award = time.time() - started
    assert during['memora_awards_total{path="cache"}'] - before['memora_awards_total{path="cache"}'] == 3
    assert (
        during['memora_rate_limited_total{scope="lessons_player"}']
        - before.get('memora_rate_limited_total{scope="lessons_player"}', 0)
        == 1
    )
    assert during['memora_verify_total{path="cache"}'] > before['memora_verify_total{path="cache"}']
    assert during["memora_verify_seconds_count"] > before["memora_verify_seconds_count"]
    assert during["memora_pending_events"] == 3
    # In seconds, counted from the first award of this test (not zero, not milliseconds).
    assert 0 < during["memora_oldest_unflushed_event_age_seconds"] <= since_first_award
    assert during["memora_outbox_students"] == 0
    call_command("sync_wallets", "--no-progress")
    after = scrape(api)
    assert after["memora_pending_events"] == 0
    assert after["memora_oldest_unflushed_event_age_seconds"] == 0
    assert after["memora_flush_duration_seconds_count"] > during["memora_flush_duration_seconds_count"]
    # Three events, one wallet row: two wallet writes avoided.
    assert after["memora_wallet_writes_avoided_total"] - during["memora_wallet_writes_avoided_total"] == 2


# Every series /metrics exports, each from the start (zero until it counts): a dashboard or an alert
# on a series that has not happened yet must not find it missing.
PROCESS_SERIES = [
    'memora_verify_total{path="cache"}',
    'memora_verify_total{path="database"}',
    'memora_awards_total{path="cache"}',
    'memora_awards_total{path="database"}',
    "memora_verify_seconds_count",
    "memora_wallet_writes_avoided_total",
    "memora_flush_duration_seconds_count",
    "memora_dead_letters_total",
    "memora_flush_dropped_deleted_total",
    *(f'memora_rate_limited_total{{scope="{scope}"}}' for scope in metrics.RATE_LIMIT_SCOPES),
]
SCRAPE_TIME_SERIES = [
    "memora_pending_events",
    "memora_oldest_unflushed_event_age_seconds",
    "memora_outbox_students",
    "memora_dead_letters_open",
]


def test_every_series_is_exported_at_zero_by_a_fresh_process(tmp_path):
    # As under gunicorn: prometheus-client's multiprocess mode, nothing counted yet.
    (tmp_path / "prom").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from core import metrics; "
         "print(metrics.exposition().decode())"],
        cwd=ROOT, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    values = parse(result.stdout)
    assert {series: values.get(series) for series in PROCESS_SERIES} == dict.fromkeys(PROCESS_SERIES, 0.0)


def test_the_scrape_time_series_are_exported(api, settings):
    settings.MEMORA_METRICS_TOKEN = TOKEN
    values = scrape(api)
    assert set(SCRAPE_TIME_SERIES) <= set(values), sorted(values)

"""/metrics: Prometheus text, behind the metrics token, its figures moving with load and flush."""

from __future__ import annotations

import re
import uuid

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-me"


def scrape(api) -> dict[str, float]:
    response = api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    values: dict[str, float] = {}
    for line in response.content.decode().splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


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
    for i in range(4):  # the fourth is refused by the per-student limit
        student.post(f"/api/v1/lessons/l{i}/complete/", {}, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert student.get("/api/v1/wallet/").status_code == 200
    during = scrape(api)
    assert during['memora_awards_total{path="cache"}'] - before['memora_awards_total{path="cache"}'] == 3
    assert (
        during['memora_rate_limited_total{scope="lessons_player"}']
        - before.get('memora_rate_limited_total{scope="lessons_player"}', 0)
        == 1
    )
    assert during['memora_verify_total{path="cache"}'] > before['memora_verify_total{path="cache"}']
    assert during["memora_verify_seconds_count"] > before["memora_verify_seconds_count"]
    assert during["memora_pending_events"] == 3
    assert during["memora_oldest_unflushed_event_age_seconds"] >= 0
    assert during["memora_outbox_students"] == 0
    call_command("sync_wallets", "--no-progress")
    after = scrape(api)
    assert after["memora_pending_events"] == 0
    assert after["memora_oldest_unflushed_event_age_seconds"] == 0
    assert after["memora_flush_duration_seconds_count"] > during["memora_flush_duration_seconds_count"]
    # Three events, one wallet row: two wallet writes avoided.
    assert after["memora_wallet_writes_avoided_total"] - during["memora_wallet_writes_avoided_total"] == 2

"""Operator commands: verify_wallets finds and fixes drift, rebuild_cache reloads Redis, sync_wallets
--dry-run writes nothing; and the broker being away never fails a request."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import CommandError, call_command

from core import hotstate
from devices import cache as device_cache
from memora.tests.redisproc import free_port
from wallets import cache as wallet_cache
from wallets.models import LedgerEvent, PlayerWallet
from wallets.tests.factories import lesson_completed

pytestmark = pytest.mark.django_db(transaction=True)


def complete(student, lesson: str) -> dict:
    """Over HTTP: what the broker-away test is about."""
    response = student.post(
        f"/api/v1/lessons/{lesson}/complete/", {"score": 100}, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
    )
    assert response.status_code == 201
    return response.json()


def award(student, lesson: str) -> None:
    """Through the service: the commands are what these tests are about."""
    lesson_completed(player_id=student.player_id, lesson_id=lesson)


def test_verify_wallets_reports_drift_and_fixes_it(student, capsys):
    award(student, "a")
    award(student, "b")
    call_command("sync_wallets", "--no-progress")
    PlayerWallet.objects.filter(player_id=student.player_id).update(xp_total=999, current_streak=4, longest_streak=4)
    with pytest.raises(CommandError, match="1 wallets drift"):
        call_command("verify_wallets")
    assert "xp_total is 999, ledger says 30" in capsys.readouterr().out
    call_command("verify_wallets", "--fix")
    wallet = PlayerWallet.objects.get(player_id=student.player_id)
    assert (wallet.xp_total, wallet.current_streak) == (30, 1)
    call_command("verify_wallets")
    # The fix reached the Redis copy as well.
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 30


def test_sync_wallets_dry_run_writes_nothing(student, capsys):
    award(student, "a")
    call_command("sync_wallets", "--dry-run", "--no-progress")
    assert "would write: 1 students, 1 events" in capsys.readouterr().out
    assert not LedgerEvent.objects.exists()
    call_command("sync_wallets", "--player", str(student.player_id), "--no-progress")
    assert LedgerEvent.objects.count() == 1


def test_rebuild_cache_reloads_sessions_and_wallets(student, django_assert_num_queries):
    award(student, "a")
    call_command("sync_wallets", "--no-progress")
    award(student, "b")  # still pending in Redis
    # Redis lost the student's session and wallet copies (the pending event is kept).
    pid = student.player_id
    hotstate.connection().delete(
        device_cache.auth_key(pid), wallet_cache.wallet_key(pid), wallet_cache.lessons_key(pid)
    )
    call_command("rebuild_cache", "--no-progress")
    with django_assert_num_queries(0):
        assert student.get("/api/v1/session/").status_code == 200
        assert student.get("/api/v1/wallet/").json()["xp_total"] == 30


def test_the_broker_away_never_fails_a_request(student_factory, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    student = student_factory()
    assert complete(student, "a")["xp_awarded"] == 15
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    assert tablet.post("/api/v1/auth/logout/").status_code == 204

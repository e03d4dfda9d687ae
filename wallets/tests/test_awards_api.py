"""Awards over HTTP: the XP rule table, its worked examples, idempotency and the history."""

from __future__ import annotations

import time
import uuid

import pytest
from django.core.management import call_command

from wallets.models import LedgerEvent, PlayerWallet

pytestmark = pytest.mark.django_db(transaction=True)


def complete(student, lesson, score=None, key=None):
    body = {} if score is None else {"score": score}
    return student.post(f"/api/v1/lessons/{lesson}/complete/", body, HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()))


def test_worked_examples_of_the_design(student, settings):
    settings.MEMORA_RATE_LESSONS_PLAYER = (1000, 60)
    awarded = [complete(student, lesson, 80).json()["xp_awarded"] for lesson in ("a", "b", "c")]
    assert awarded == [10, 10, 10]
    again = complete(student, "a", 80)
    assert again.status_code == 201
    assert again.json()["xp_awarded"] == 0
    assert again.json()["capped"] is False
    assert again.json()["wallet"]["streak_active_today"] is True
    perfect = complete(student, "d", 100).json()
    assert perfect["xp_awarded"] == 15
    assert perfect["wallet"]["xp_today"] == 45
    # Up to 195 earned today: 15 more lessons of 10 = 150 -> 195.
    for i in range(15):
        assert complete(student, f"fill-{i}", 50).json()["xp_awarded"] == 10
    e = complete(student, "e", 100).json()
    assert (e["xp_awarded"], e["capped"]) == (5, True)
    f = complete(student, "f").json()
    assert (f["xp_awarded"], f["capped"]) == (0, True)
    assert f["wallet"]["xp_today"] == 200
    assert f["wallet"]["xp_total"] == 200
    wallet = student.get("/api/v1/wallet/").json()
    assert wallet["xp_total"] == 200
    assert wallet["current_streak"] == 1


def test_replay_conflict_and_missing_key(student):
    first = complete(student, "algebra-1", 100, key="k-1")
    assert first.status_code == 201
    replay = complete(student, "algebra-1", 100, key="k-1")
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    conflict = complete(student, "algebra-1", 90, key="k-1")
    assert conflict.status_code == 422
    assert conflict.json()["code"] == "idempotency_key_reused"
    missing = student.post("/api/v1/lessons/algebra-1/complete/", {})
    assert missing.status_code == 400
    assert missing.json()["code"] == "idempotency_key_missing"
    invalid = student.post("/api/v1/lessons/algebra-1/complete/", {}, HTTP_IDEMPOTENCY_KEY="é" * 3)
    assert invalid.json()["code"] == "idempotency_key_invalid"
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 15


def test_bad_lesson_ids_and_scores(student):
    assert complete(student, "-bad").json()["code"] == "validation_error"
    assert complete(student, "a" * 65).json()["code"] == "validation_error"
    assert complete(student, "ok", 101).json()["errors"]["score"]
    assert complete(student, "ok", "x").status_code == 400


def test_flush_writes_ledger_and_wallet_and_history_spans_both(student):
    for lesson in ("a", "b"):
        complete(student, lesson, 100)
    before = student.get("/api/v1/wallet/history/").json()
    assert [e["flushed"] for e in before["results"]] == [False, False]
    call_command("sync_wallets", "--no-progress")
    assert LedgerEvent.objects.filter(player_id=student.player_id).count() == 2
    wallet = PlayerWallet.objects.get(player_id=student.player_id)
    assert wallet.xp_total == 30
    assert wallet.current_streak == 1
    complete(student, "c", 50)
    after = student.get("/api/v1/wallet/history/").json()
    assert [(e["lesson_id"], e["flushed"]) for e in after["results"]] == [("c", False), ("b", True), ("a", True)]
    call_command("sync_wallets", "--no-progress")
    call_command("verify_wallets")
    assert student.get("/api/v1/wallet/").json()["xp_total"] == 40


def test_history_pages_with_a_cursor(student, settings):
    settings.MEMORA_RATE_LESSONS_PLAYER = (1000, 60)
    for i in range(7):
        complete(student, f"l{i}")
        if i == 3:
            call_command("sync_wallets", "--no-progress")
    seen = []
    url = "/api/v1/wallet/history/?page_size=3"
    while url:
        page = student.get(url).json()
        seen += [e["lesson_id"] for e in page["results"]]
        url = page["next"]
    assert seen == [f"l{i}" for i in reversed(range(7))]


def test_cold_wallet_is_rebuilt_from_database_plus_pending(student, redis_namespace):
    from core import hotstate
    from wallets import cache

    complete(student, "a", 100)
    call_command("sync_wallets", "--no-progress")
    complete(student, "b", 80)
    hotstate.connection().delete(cache.wallet_key(student.player_id), cache.lessons_key(student.player_id))
    wallet = student.get("/api/v1/wallet/").json()
    assert wallet["xp_total"] == 25
    assert wallet["xp_today"] == 25
    assert complete(student, "a", 100).json()["xp_awarded"] == 0  # the lesson set was rebuilt too


def test_student_cannot_use_the_service_endpoint(student):
    # Only service keys may call it: a student's token is no credential there (DESIGN, order of checks).
    response = student.post(
        "/api/v1/wallet/xp/", {"player": student.player_id, "amount": 50, "reason": "x"}, HTTP_IDEMPOTENCY_KEY="s1"
    )
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_retry_while_the_first_request_runs_is_409_on_the_database_path(student, settings):
    import MySQLdb
    from django.db import connection

    from wallets.idempotency import key_digest, scope

    settings.MEMORA_HOT_STATE = "database"
    digest = key_digest(
        scope(caller=f"p:{student.player_id}", endpoint="lesson_complete", player_id=student.player_id), "k-slow"
    )
    db = connection.settings_dict
    first = MySQLdb.connect(host=db["HOST"] or "127.0.0.1", port=int(db["PORT"] or 3306), user=db["USER"])
    try:
        # The first request with this key holds its lock (it is still running).
        cursor = first.cursor()
        cursor.execute("SELECT GET_LOCK(%s, 0)", [f"memora-idem-{digest}"])
        assert cursor.fetchone() == (1,)
        busy = complete(student, "slow-lesson", key="k-slow")
        assert (busy.status_code, busy.json()["code"]) == (409, "idempotency_in_progress")
        assert complete(student, "other-lesson", key="k-other").status_code == 201  # other keys go on
    finally:
        first.close()
    # The server lets go of a closed connection's lock a moment after close() returns (a busy
    # machine showed the retry meeting it still held): wait for that, not for a fixed time.
    deadline = time.monotonic() + 30
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT IS_FREE_LOCK(%s)", [f"memora-idem-{digest}"])
            if cursor.fetchone() == (1,):
                break
        assert time.monotonic() < deadline, "the closed connection's lock was never released"
        time.sleep(0.02)
    assert complete(student, "slow-lesson", key="k-slow").status_code == 201
    assert complete(student, "slow-lesson", key="k-slow")["Idempotent-Replayed"] == "true"


def test_the_warm_award_and_wallet_paths_make_no_query(student, django_assert_num_queries):
    assert complete(student, "warm-up").status_code == 201  # builds the student's Redis wallet
    with django_assert_num_queries(0):
        assert complete(student, "algebra-2", 100).status_code == 201
        assert student.get("/api/v1/wallet/").json()["xp_total"] == 25

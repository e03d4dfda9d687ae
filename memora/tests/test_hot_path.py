"""The device + session check on a warm cache: no database query (counted, and with the database
unreachable), one Redis round trip; cache and truth: a cold or emptied Redis is rebuilt from the
database without resurrecting an ended session, an older generation never overwrites a newer one,
and MEMORA_HOT_STATE=database forces the database path."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices import cache, selectors, services, tokens
from devices.models import CacheOutbox, PlayerAuthState, PlayerSession
from devices.tests.helpers import (
    auth_hash,
    count_redis_round_trips,
    database_unreachable,
    generation,
    wipe_player_keys,
)
from memora import reconciler

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = "/api/v1/session/"


def queries_during(fn):
    with CaptureQueriesContext(connection) as ctx:
        response = fn()
    return response, len(ctx.captured_queries)


# --- no database on a warm cache ----------------------------------------------------------------------


def test_the_warm_path_makes_no_query(student, django_assert_num_queries):
    assert student.get(SESSION).status_code == 200  # warm-up
    with django_assert_num_queries(0):
        response = student.get(SESSION)
    assert response.status_code == 200
    assert response.json()["device"]["device_id"] == student.device_id


def test_the_warm_path_answers_with_the_database_unreachable(student):
    warm = student.get(SESSION)
    assert warm.status_code == 200
    with database_unreachable():
        response = student.get(SESSION)
        assert response.status_code == 200
        assert response.json()["device"] == warm.json()["device"]
        assert response.json()["expires_at"] == warm.json()["expires_at"]
        # Refusals come from Redis too.
        thief = student.on_device()
        thief.token = student.token
        assert thief.get(SESSION).json()["code"] == "device_mismatch"
    # And the database is back for the rest of the test.
    assert student.get("/api/v1/profile/").status_code == 200


def test_an_ended_session_is_refused_with_the_database_unreachable(student):
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    with database_unreachable():
        assert student.get(SESSION).json()["code"] == "session_replaced"
        assert tablet.get(SESSION).status_code == 200


def test_a_cold_cache_with_the_database_unreachable_is_503_not_500(student):
    wipe_player_keys(student.player_id)
    with database_unreachable():
        response = student.get(SESSION)
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert int(response["Retry-After"]) >= 1


def test_what_needs_the_database_answers_503_while_it_is_unreachable(student, api):
    assert student.get(SESSION).status_code == 200
    with database_unreachable():
        profile = student.get("/api/v1/profile/")
        login = student.on_device().login()
        register = api.post(
            "/api/v1/auth/register/",
            {"username": "newcomer", "password": "correct horse battery", "display_name": "N"},
            format="json",
        )
    for response in (profile, login, register):
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "service_unavailable"
        assert int(response["Retry-After"]) >= 1


# --- one Redis round trip -------------------------------------------------------------------------------


def test_one_redis_round_trip_per_check(student):
    assert student.get(SESSION).status_code == 200  # warm-up (loads the script)
    with count_redis_round_trips() as trips:
        response = student.get(SESSION)
    assert response.status_code == 200
    assert trips.commands == ["EVALSHA"]


REFUSALS = {
    "replaced": (401, "session_replaced"),
    "logout": (401, "session_ended"),
    "mismatch": (403, "device_mismatch"),
    "forged": (401, "not_authenticated"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_one_redis_round_trip_per_refusal(student, case, django_assert_num_queries):
    assert student.get(SESSION).status_code == 200
    caller = student
    if case == "replaced":
        assert student.on_device().login().status_code == 200
    elif case == "logout":
        assert student.post("/api/v1/auth/logout/").status_code == 204
    elif case == "mismatch":
        caller = student.on_device()
        caller.token = student.token
    else:
        student.token = f"mem_{student.player_id}_" + "C" * 43
    with count_redis_round_trips() as trips, django_assert_num_queries(0):
        response = caller.get(SESSION)
    assert (response.status_code, response.json()["code"]) == REFUSALS[case]
    # An unknown token is also counted against its address (statement 14): a second script, on the
    # address's key (another Cluster slot than the student's).
    # (The once-a-second server-identity probe may ride ahead of a script in the same round trip.)
    assert len(trips) == (2 if case == "forged" else 1), trips.commands
    assert all(b"EVALSHA" in sent for sent in trips.sent), trips.commands


def test_a_last_seen_write_is_still_one_round_trip(student_factory):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        assert student.get(SESSION).status_code == 200
        traveller.shift(120)
        with count_redis_round_trips() as trips:
            response = student.get(SESSION)
        assert response.status_code == 200
        assert trips.commands == ["EVALSHA"]


def test_last_seen_is_written_to_the_database_at_most_once_a_minute(student_factory):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False) as traveller:
        student = student_factory()
        session = PlayerSession.objects.get(player_id=student.player_id, is_live=True)
        traveller.shift(30)
        assert student.get(SESSION).json()["last_seen_at"] == (start + dt.timedelta(seconds=30)).isoformat().replace(
            "+00:00", "Z"
        )
        assert services.last_seen_persist() == 0  # not due yet
        traveller.shift(40)
        assert student.get(SESSION).status_code == 200
        traveller.shift(5)
        assert student.get(SESSION).status_code == 200
        assert services.last_seen_persist() == 1
        session.refresh_from_db()
        assert session.last_seen_at == start + dt.timedelta(seconds=75)
        assert session.device.last_seen_at == start + dt.timedelta(seconds=75)
        assert services.last_seen_persist() == 0
        # The device list shows the current device's freshest time.
        devices = student.get("/api/v1/devices/").json()["results"]
        assert devices[0]["last_seen_at"] == (start + dt.timedelta(seconds=75)).isoformat().replace("+00:00", "Z")


# --- cache and truth ------------------------------------------------------------------------------------


def test_an_emptied_cache_is_rebuilt_from_the_database(student):
    assert student.get(SESSION).status_code == 200
    before = auth_hash(student.player_id)
    assert wipe_player_keys(student.player_id) == 1
    response, queries = queries_during(lambda: student.get(SESSION))
    assert response.status_code == 200
    assert queries > 0  # served by the database
    rebuilt = auth_hash(student.player_id)
    assert rebuilt["cur"] == tokens.digest(student.token) == before["cur"]
    assert rebuilt["gen"] == str(generation(student.player_id))
    assert rebuilt["complete"] == "1"
    assert rebuilt["dev"] == student.device_id
    # The next request is warm again.
    response, queries = queries_during(lambda: student.get(SESSION))
    assert (response.status_code, queries) == (200, 0)


def test_a_rebuild_never_resurrects_an_ended_session(student):
    assert student.post("/api/v1/auth/logout/").status_code == 204
    wipe_player_keys(student.player_id)
    expected = {"code": "session_ended", "detail": "You signed out. Please sign in again.", "reason": "logout"}
    assert student.get(SESSION).json() == expected
    rebuilt = auth_hash(student.player_id)
    assert "cur" not in rebuilt
    assert rebuilt[f"t:{tokens.digest(student.token)}"] == "session_ended|logout"
    assert student.get(SESSION).json() == expected


def test_a_rebuild_keeps_replaced_and_revoked_sessions_refused(student):
    old = student.token
    tablet = student.on_device()
    assert tablet.login().status_code == 200
    wipe_player_keys(student.player_id)
    assert student.get(SESSION).json()["code"] == "session_replaced"
    assert tablet.get(SESSION).status_code == 200
    assert student.login().status_code == 200
    assert student.delete(f"/api/v1/devices/{tablet.device_id}/").status_code == 204
    wipe_player_keys(student.player_id)
    assert tablet.get(SESSION).json()["code"] == "device_revoked"
    student.token = old
    assert student.get(SESSION).json()["code"] == "session_replaced"


def test_an_older_generation_never_overwrites_a_newer_copy(student):
    gen = generation(student.player_id)
    current = auth_hash(student.player_id)
    assert current["gen"] == str(gen)
    stale = {"uid": "1", "cur": "0" * 64, "sid": "1", "dev": student.device_id}
    assert cache.write(player_id=student.player_id, generation=gen - 1, ttl=60, fields=stale) is False
    assert auth_hash(student.player_id) == current
    assert student.get(SESSION).status_code == 200
    # The same or a newer generation is written.
    _gen, fields = selectors.cache_snapshot(player_id=student.player_id)
    assert cache.write(player_id=student.player_id, generation=gen, ttl=60, fields=fields) is True
    assert cache.write(player_id=student.player_id, generation=gen + 5, ttl=60, fields=fields) is True
    assert auth_hash(student.player_id)["gen"] == str(gen + 5)
    assert cache.write(player_id=student.player_id, generation=gen + 4, ttl=60, fields=stale) is False


def test_a_late_sync_of_an_old_state_cannot_undo_a_logout(student):
    """A rebuild computed before a logout but written after it is refused by the generation."""
    gen_before, fields_before = selectors.cache_snapshot(player_id=student.player_id)
    assert student.post("/api/v1/auth/logout/").status_code == 204
    payload = {k: str(v) for k, v in fields_before.items()}
    assert cache.write(player_id=student.player_id, generation=gen_before, ttl=60, fields=payload) is False
    assert student.get(SESSION).json()["code"] == "session_ended"


def test_database_mode_forces_the_database_path_for_every_check(student, settings):
    settings.MEMORA_HOT_STATE = "database"
    with count_redis_round_trips() as trips:
        response, queries = queries_during(lambda: student.get(SESSION))
        ended = student.on_device().login()
        old, queries_old = queries_during(lambda: student.get(SESSION))
    assert response.status_code == 200
    assert queries > 0
    assert ended.status_code == 200
    assert old.json()["code"] == "session_replaced"
    assert queries_old > 0
    assert len(trips) == 0


def test_a_change_made_while_redis_is_away_is_reconciled(student, settings):
    """The outbox row outlives a failed Redis write; reconciling refuses the ended session."""
    assert student.get(SESSION).status_code == 200
    settings.MEMORA_HOT_STATE = "database"
    assert student.post("/api/v1/auth/logout/").status_code == 204
    assert CacheOutbox.objects.filter(player_id=student.player_id).exists()
    settings.MEMORA_HOT_STATE = "redis"
    assert reconciler.reconcile_outbox() >= 1
    assert not CacheOutbox.objects.filter(player_id=student.player_id).exists()
    assert student.get(SESSION).json()["code"] == "session_ended"
    assert auth_hash(student.player_id)["gen"] == str(
        PlayerAuthState.objects.get(player_id=student.player_id).generation
    )


def test_the_cached_copy_holds_digests_only(student):
    stored = json.dumps(auth_hash(student.player_id))
    secret = student.token.split("_", 2)[2]
    assert secret not in stored
    assert student.token not in stored
    assert tokens.digest(student.token) in stored
    assert not PlayerSession.objects.filter(token_digest__contains=secret).exists()

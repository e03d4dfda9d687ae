"""Statements 14 and 16 over HTTP: unknown tokens and service keys cost no database query the second
time, an address (/64) that keeps sending them gets 429 for those only, and a revoked service key
stops on its next request however the cache fill races the revocation."""

from __future__ import annotations

import json
import uuid

import pytest

from core import hotstate
from devices import servicekeys, tokens

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = "/api/v1/session/"
AWARD = "/api/v1/wallet/xp/"


def unknown_token(player_id: int) -> str:
    return f"mem_{player_id}_{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}"


def get_session(api, token: str, address: str = "127.0.0.1", device_id: str | None = None):
    return api.get(
        SESSION,
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_X_DEVICE_ID=device_id or str(uuid.uuid4()),
        REMOTE_ADDR=address,
    )


def award(api, raw_key: str, player_id: int, address: str = "127.0.0.1"):
    return api.post(
        AWARD,
        {"player": player_id, "amount": 5, "reason": "fair"},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {raw_key}",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        REMOTE_ADDR=address,
    )


def test_a_token_of_a_student_who_does_not_exist_costs_no_query_the_second_time(api, django_assert_num_queries):
    token = unknown_token(987_654_321)
    assert get_session(api, token).status_code == 401
    with django_assert_num_queries(0):
        response = get_session(api, token)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_while_redis_is_away_the_process_remembers_the_unknown_token(api, settings, django_assert_num_queries):
    settings.MEMORA_HOT_STATE = "database"
    token = unknown_token(987_654_322)
    assert get_session(api, token).status_code == 401
    with django_assert_num_queries(0):
        assert get_session(api, token).status_code == 401


def test_an_address_sending_unknown_credentials_gets_429_for_those_only(api, student, settings):
    settings.MEMORA_RATE_UNKNOWN_CREDENTIALS = (5, 600)
    attacker = "2001:db8:77:1::1"
    for i in range(5):
        response = get_session(api, unknown_token(student.player_id), address=f"2001:db8:77:1::{i + 1}")
        assert response.status_code == 401
    refused = get_session(api, unknown_token(student.player_id), address="2001:db8:77:1:ffff::2")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 590 <= int(refused["Retry-After"]) <= 600
    # From the same /64: a known token works, a login and a registration are not affected ...
    assert get_session(api, student.token, address=attacker, device_id=student.device_id).status_code == 200
    login = api.post(
        "/api/v1/auth/login/",
        {"username": student.username, "password": student.password},
        format="json",
        HTTP_X_DEVICE_ID=student.device_id,
        REMOTE_ADDR=attacker,
    )
    assert login.status_code == 200
    # ... and the session that login replaced still says so (a known token, even an ended one).
    replaced = get_session(api, student.token, address=attacker, device_id=student.device_id)
    assert replaced.status_code == 401
    assert replaced.json()["code"] == "session_replaced"
    # Another /64 is not affected.
    assert get_session(api, unknown_token(student.player_id), address="2001:db8:77:2::1").status_code == 401


def test_an_unknown_service_key_is_remembered_and_counted(api, student, settings, django_assert_num_queries):
    settings.MEMORA_RATE_UNKNOWN_CREDENTIALS = (3, 600)
    raw = f"mks_{'a' * 12}_{'B' * 43}"
    assert award(api, raw, student.player_id).status_code == 401
    with django_assert_num_queries(0):
        assert award(api, raw, student.player_id).status_code == 401
    assert award(api, raw, student.player_id).status_code == 401
    assert award(api, raw, student.player_id).status_code == 429


def test_a_revoked_key_stops_on_its_next_request(api, student):
    created, raw = servicekeys.service_key_create(name="fair", scopes=["award_xp"], actor=None)
    assert award(api, raw, student.player_id).status_code == 201  # the cache holds it now
    servicekeys.service_key_revoke(key_pk=created.pk)
    response = award(api, raw, student.player_id)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_cache_fill_that_read_the_key_before_its_revocation_writes_nothing(api, student):
    """The race of the first build: a request reads the key from the database, the revocation
    commits and clears the cache, then the request fills the cache with the key it read."""
    created, raw = servicekeys.service_key_create(name="fair", scopes=["award_xp"], actor=None)
    digest = tokens.digest(raw)
    servicekeys.service_key_revoke(key_pk=created.pk)
    stale = json.dumps({"id": created.pk, "name": created.name, "scopes": ["award_xp"]})
    servicekeys._fill_cache(digest, stale, servicekeys.CACHE_TTL)  # the late fill
    assert hotstate.call(lambda r: r.get(servicekeys._cache_key(digest))) is None
    tomb_ttl = hotstate.call(lambda r: r.ttl(servicekeys._tomb_key(digest)))
    assert tomb_ttl > servicekeys.CACHE_TTL  # it outlives any cached copy
    assert award(api, raw, student.player_id).status_code == 401


def test_a_key_revoked_while_redis_was_away_is_buried_when_it_answers(api, student, settings):
    created, raw = servicekeys.service_key_create(name="fair", scopes=["award_xp"], actor=None)
    assert award(api, raw, student.player_id).status_code == 201  # cached
    settings.MEMORA_HOT_STATE = "database"
    servicekeys.service_key_revoke(key_pk=created.pk)  # Redis is away: no tombstone yet
    settings.MEMORA_HOT_STATE = "redis"
    # The cached copy still says "valid"; the first call that finds Redis answering again after a
    # failure runs the recovery listeners before its own command.
    hotstate.breaker.record_failure()
    response = award(api, raw, student.player_id)
    assert response.status_code == 401

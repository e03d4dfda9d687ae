"""Service API keys: created keys verify, revoked keys do not, only the digest is stored, the
authentication class, and a student endpoint refuses a service key."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from rest_framework.request import Request

from core.errors import ApiError
from devices import servicekeys, tokens
from devices.authentication import DeviceSessionAuthentication, ServiceKeyAuthentication
from devices.models import ServiceApiKey
from players.principals import ServicePrincipal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key():
    created, raw = servicekeys.service_key_create(name="science fair", scopes=["award_xp", "award_xp"], actor=None)
    return created, raw


def drf_request(authorization: str | None, **extra) -> Request:
    meta = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    return Request(RequestFactory().get("/api/v1/wallet/xp/", **meta, **extra))


def test_a_created_key_verifies_with_its_scopes(key):
    created, raw = key
    assert raw.startswith(f"mks_{created.prefix}_")
    assert len(raw.split("_", 2)[2]) >= 43
    principal = servicekeys.service_key_verify(raw=raw)
    assert principal == ServicePrincipal(key_id=created.pk, name="science fair", scopes=frozenset({"award_xp"}))
    assert created.scopes == ["award_xp"]


def test_only_the_digest_is_stored(key):
    created, raw = key
    row = ServiceApiKey.objects.filter(pk=created.pk).values().get()
    assert row["digest"] == tokens.digest(raw)
    secret = raw.split("_", 2)[2]
    for value in row.values():
        assert raw not in str(value)
        assert secret not in str(value)


def test_a_warm_key_needs_no_query(key, django_assert_num_queries):
    _created, raw = key
    assert servicekeys.service_key_verify(raw=raw) is not None
    with django_assert_num_queries(0):
        assert servicekeys.service_key_verify(raw=raw) is not None


def test_a_revoked_key_does_not_verify(key):
    created, raw = key
    assert servicekeys.service_key_verify(raw=raw) is not None  # cached now
    servicekeys.service_key_revoke(key_pk=created.pk)
    assert servicekeys.service_key_verify(raw=raw) is None
    created.refresh_from_db()
    assert created.revoked_at is not None


def test_a_revoked_key_does_not_verify_on_the_database_path(key, settings):
    created, raw = key
    settings.MEMORA_HOT_STATE = "database"
    assert servicekeys.service_key_verify(raw=raw) is not None
    servicekeys.service_key_revoke(key_pk=created.pk)
    assert servicekeys.service_key_verify(raw=raw) is None


@pytest.mark.parametrize("raw", ["", "garbage", "mks_short_x", "mks_abcdefabcdef_" + "A" * 43, "mem_1_" + "A" * 43])
def test_unknown_or_malformed_keys_do_not_verify(key, raw):
    assert servicekeys.service_key_verify(raw=raw) is None


def test_a_key_with_one_wrong_character_does_not_verify(key):
    _created, raw = key
    forged = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert servicekeys.service_key_verify(raw=forged) is None


def test_the_per_key_rate_limit(key, settings):
    _created, raw = key
    settings.MEMORA_RATE_SERVICE_KEY = (3, 60)
    for _ in range(3):
        assert servicekeys.service_key_verify(raw=raw) is not None
    with pytest.raises(ApiError) as caught:
        servicekeys.service_key_verify(raw=raw)
    assert caught.value.code == "rate_limited"
    assert caught.value.status == 429
    assert 1 <= caught.value.retry_after <= 60


def test_the_authentication_class(key):
    created, raw = key
    user, auth = ServiceKeyAuthentication().authenticate(drf_request(f"Api-Key {raw}"))
    assert isinstance(user, ServicePrincipal)
    assert (user.key_id, auth) == (created.pk, None)
    # Not its scheme: left to the other classes.
    assert ServiceKeyAuthentication().authenticate(drf_request("Bearer mem_1_" + "A" * 43)) is None
    assert ServiceKeyAuthentication().authenticate(drf_request(None)) is None
    # Its scheme with a bad key: refused.
    for bad in ("Api-Key nope", "Api-Key ", f"Api-Key {raw}x"):
        with pytest.raises(ApiError) as caught:
            ServiceKeyAuthentication().authenticate(drf_request(bad))
        assert (caught.value.code, caught.value.status) == ("not_authenticated", 401)
    # The device session class leaves a service key alone.
    assert DeviceSessionAuthentication().authenticate(drf_request(f"Api-Key {raw}")) is None


def test_a_revoked_key_is_refused_by_the_authentication_class(key):
    created, raw = key
    servicekeys.service_key_revoke(key_pk=created.pk)
    with pytest.raises(ApiError) as caught:
        ServiceKeyAuthentication().authenticate(drf_request(f"Api-Key {raw}"))
    assert caught.value.code == "not_authenticated"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/session/"),
        ("get", "/api/v1/profile/"),
        ("patch", "/api/v1/profile/"),
        ("get", "/api/v1/devices/"),
        ("delete", "/api/v1/devices/0b6c1c3e-4f7a-4d7e-9a59-3f1f0c2a9d10/"),
        ("post", "/api/v1/auth/logout/"),
    ],
)
def test_a_student_endpoint_refuses_a_service_key(api, key, method, path):
    _created, raw = key
    response = getattr(api, method)(path, {}, format="json", HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "permission_denied"
    # With a device id too: still a service key, still not a student.
    response = getattr(api, method)(
        path,
        {},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {raw}",
        HTTP_X_DEVICE_ID="0b6c1c3e-4f7a-4d7e-9a59-3f1f0c2a9d10",
    )
    assert response.json()["code"] == "permission_denied"


def test_a_bad_service_key_on_a_student_endpoint_is_not_authenticated(api):
    response = api.get("/api/v1/session/", HTTP_AUTHORIZATION="Api-Key mks_abcdefabcdef_" + "A" * 43)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"

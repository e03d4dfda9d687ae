"""Statements 12 and 13 over HTTP, as an attacker would try them: a lockout spread over many
addresses cannot stop a student on their own device (device proof), a new device is still refused,
support lifts the locks from the student overview (audited), IPv6 counts per /64, and a proxy
nobody declared raises a flag that /status shows."""

from __future__ import annotations

import uuid

import pytest
from django.test import RequestFactory

from core import clientip
from devices import loginlimits, services
from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry, LoginFailure
from devices.tokens import digest
from memora.tests.support import staff_client

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/auth/login/"


def login(api, username, password, device_id, proof=None, address="127.0.0.1", **extra):
    headers = {"HTTP_X_DEVICE_ID": device_id, "REMOTE_ADDR": address, **extra}
    if proof is not None:
        headers["HTTP_X_DEVICE_PROOF"] = proof
    return api.post(URL, {"username": username, "password": password}, format="json", **headers)


def first_login(api, student):
    response = login(api, student.username, student.password, student.device_id)
    assert response.status_code == 200, response.content
    return response.json()["device_proof"]


def spray(api, username, count, *, addresses=True):
    """Wrong passwords for ``username``, each from another address and a new device id."""
    for i in range(count):
        address = f"198.51.{100 + i // 250}.{i % 250 + 1}" if addresses else "198.51.100.1"
        response = login(api, username, "not the password", str(uuid.uuid4()), address=address)
        # Below the lock's threshold: each is a plain refusal (an early lock would be a 429 here).
        assert (response.status_code, response.json()["code"]) == (401, "invalid_credentials"), response.content


def test_login_returns_a_device_proof_stored_only_as_a_digest_and_replaced_each_login(api, student_factory):
    student = student_factory(login=False)
    proof = first_login(api, student)
    assert proof.startswith("dp_") and len(proof) >= 46
    device = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    assert device.proof_digest == digest(proof)
    again = login(api, student.username, student.password, student.device_id, proof=proof)
    assert again.status_code == 200
    second = again.json()["device_proof"]
    assert second != proof
    device.refresh_from_db()
    assert device.proof_digest == digest(second)


def test_a_lockout_spread_over_many_addresses_spares_the_students_own_device(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (20, 3600)  # the design's 100, scaled down for speed
    student = student_factory(login=False)
    proof = first_login(api, student)
    spray(api, student.username, 20)
    # The account is locked: a new device is refused, even with the right password ...
    stranger = login(api, student.username, student.password, str(uuid.uuid4()), address="203.0.113.9")
    assert stranger.status_code == 429
    assert stranger.json()["code"] == "rate_limited"
    # ... and so is the student's own device id without its proof (device ids are not secrets).
    assert login(api, student.username, student.password, student.device_id).status_code == 429
    # With the proof, the student's own phone signs in, from wherever it is.
    own = login(api, student.username, student.password, student.device_id, proof=proof, address="203.0.113.50")
    assert own.status_code == 200, own.content
    fresh = own.json()["device_proof"]
    # The proof it replaced is worth nothing now: that login is a new device's, and refused.
    assert login(api, student.username, student.password, student.device_id, proof=proof).status_code == 429
    assert login(api, student.username, student.password, student.device_id, proof=fresh).status_code == 200


def test_a_proof_holds_only_for_its_own_device_and_account(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (5, 3600)
    amira = student_factory(login=False)
    proof = first_login(api, amira)
    other = student_factory(login=False)
    first_login(api, other)
    spray(api, amira.username, 5)
    spray(api, other.username, 5)
    # Amira's proof with another device id, or for another account: a new device, refused.
    assert login(api, amira.username, amira.password, str(uuid.uuid4()), proof=proof).status_code == 429
    assert login(api, other.username, other.password, amira.device_id, proof=proof).status_code == 429
    assert login(api, amira.username, amira.password, amira.device_id, proof="dp_" + "A" * 43).status_code == 429
    assert login(api, amira.username, amira.password, amira.device_id, proof=proof).status_code == 200


def test_a_revoked_devices_proof_is_no_proof(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (3, 3600)
    student = student_factory(login=False)
    proof = first_login(api, student)
    device = AuthorizedDevice.objects.get(player_id=student.player_id, device_id=student.device_id)
    services.device_revoke(device_pk=device.pk, actor=None, reason="lost phone")
    spray(api, student.username, 3)
    assert login(api, student.username, student.password, student.device_id, proof=proof).status_code == 429


def test_the_proven_device_has_its_own_lock_and_its_failures_count_for_the_username(api, student_factory, settings):
    student = student_factory(login=False)
    proof = first_login(api, student)
    for _ in range(10):
        wrong = login(api, student.username, "wrong", student.device_id, proof=proof)
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_credentials"
    locked = login(api, student.username, student.password, student.device_id, proof=proof)
    assert locked.status_code == 429
    assert 15 * 60 - 5 <= locked.json()["retry_after"] <= 15 * 60
    # That device alone: the account's other logins are not locked by it (10 < 100 per username),
    # and the (username, address) counter never saw those failures.
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 200


def test_proven_failures_reach_the_username_lock(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (5, 3600)
    student = student_factory(login=False)
    proof = first_login(api, student)
    for _ in range(5):
        assert login(api, student.username, "wrong", student.device_id, proof=proof).status_code == 401
    assert login(api, student.username, student.password, str(uuid.uuid4()), address="203.0.113.7").status_code == 429
    # The device itself is below its own limit of 10: the username's lock does not stop it.
    assert login(api, student.username, student.password, student.device_id, proof=proof).status_code == 200


def test_a_proven_device_is_not_held_to_the_addresss_attempt_limit(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_IP = (2, 600)
    student = student_factory(login=False)
    proof = login(api, student.username, student.password, student.device_id, address="203.0.113.1").json()[
        "device_proof"
    ]
    login(api, student.username, student.password, str(uuid.uuid4()), address="203.0.113.1")
    assert login(api, student.username, student.password, student.device_id, address="203.0.113.1").status_code == 429
    proven = login(api, student.username, student.password, student.device_id, proof=proof, address="203.0.113.1")
    assert proven.status_code == 200


def test_device_lock_in_the_database_while_redis_is_away(api, student_factory, settings):
    student = student_factory(login=False)
    proof = first_login(api, student)
    settings.MEMORA_HOT_STATE = "database"
    for _ in range(10):
        assert login(api, student.username, "wrong", student.device_id, proof=proof).status_code == 401
    assert LoginFailure.objects.filter(device_id=student.device_id).count() == 10
    assert login(api, student.username, student.password, student.device_id, proof=proof).status_code == 429
    # The address's own counter saw none of them.
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 200


# --- support lifts the locks -----------------------------------------------------------------------


def test_support_clears_the_locks_from_the_student_overview(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (5, 3600)
    student = student_factory(login=False)
    first_login(api, student)
    spray(api, student.username, 5)
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 429
    assert loginlimits.login_lock_status(username=student.username) > 0

    client, agent = staff_client(f"agent_{uuid.uuid4().hex[:6]}", support=True)
    overview = f"/admin/players/playerprofile/{student.player_id}/overview/"
    page = client.get(overview)
    assert page.status_code == 200
    assert "New devices are locked out" in page.text
    assert "Clear every login lock" in page.text
    clear = f"{overview}clear-login-locks/"
    confirm = client.get(clear)  # a confirmation page; the change is its POST (with the admin's CSRF check)
    assert confirm.status_code == 200
    assert "more second(s)" in confirm.text  # what the lock still holds
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 429
    done = client.post(clear, follow=True)
    assert done.status_code == 200
    assert "Login locks of" in done.text
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 200
    entry = DeviceAuditEntry.objects.get(player_id=student.player_id, action=AuditAction.LOGIN_LOCKS_CLEARED)
    assert entry.actor == agent


def test_view_only_staff_cannot_clear_locks(student):
    client, _ = staff_client(f"viewer_{uuid.uuid4().hex[:6]}", perms=("view_playerprofile",))
    overview = f"/admin/players/playerprofile/{student.player_id}/overview/"
    assert "Clear every login lock" not in client.get(overview).text
    assert client.post(f"{overview}clear-login-locks/").status_code == 403
    assert not DeviceAuditEntry.objects.filter(action=AuditAction.LOGIN_LOCKS_CLEARED).exists()


def test_clearing_also_forgets_failures_counted_in_the_database(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (3, 3600)
    student = student_factory(login=False)
    settings.MEMORA_HOT_STATE = "database"
    spray(api, student.username, 3)
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 429
    settings.MEMORA_HOT_STATE = "redis"
    services.login_locks_clear(player_id=student.player_id, actor=None)
    assert not LoginFailure.objects.exists()
    settings.MEMORA_HOT_STATE = "database"
    assert login(api, student.username, student.password, str(uuid.uuid4())).status_code == 200


# --- IPv6 per /64, IPv4-mapped as IPv4 -------------------------------------------------------------


def test_ipv6_clients_are_limited_per_64(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_IP = (3, 600)
    student = student_factory(login=False)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::dead", "2001:db8:1:2:ffff:ffff:ffff:fffe"):
        response = login(api, student.username, student.password, student.device_id, address=host)
        assert response.status_code == 200
    rotated = login(api, student.username, student.password, student.device_id, address="2001:db8:1:2:abcd::9")
    assert rotated.status_code == 429
    neighbour = login(api, student.username, student.password, student.device_id, address="2001:db8:1:3::1")
    assert neighbour.status_code == 200


def test_ipv4_mapped_addresses_count_as_ipv4(api, student_factory, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER_IP = (3, 900)
    student = student_factory(login=False)
    for address in ("192.0.2.44", "::ffff:192.0.2.44", "::ffff:c000:22c"):
        assert login(api, student.username, "wrong", str(uuid.uuid4()), address=address).status_code == 401
    assert login(api, student.username, student.password, str(uuid.uuid4()), address="192.0.2.44").status_code == 429


def test_address_keys():
    assert clientip.address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::"
    assert clientip.address_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert clientip.address_key("203.0.113.5") == "203.0.113.5"
    assert clientip.address_key("::1") == "::"


# --- a proxy nobody declared -----------------------------------------------------------------------


def status(api, settings):
    settings.MEMORA_METRICS_TOKEN = "t" * 32
    return api.get("/status", HTTP_AUTHORIZATION="Bearer " + "t" * 32).json()


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3", "::1", "fd00::5", "::ffff:192.168.1.1"])
def test_forwarded_for_from_a_private_peer_without_trusted_proxies_raises_the_flag(api, student, settings, peer):
    clientip.forget_proxy_flag_throttle()
    settings.MEMORA_TRUSTED_PROXIES = []
    assert status(api, settings)["checks"]["proxy"] == {"ok": True}
    assert not clientip.proxy_flag_set()
    # From a public peer, the header is the client's own business: no flag.
    login(
        api,
        student.username,
        student.password,
        student.device_id,
        address="93.184.216.34",  # public (the documentation ranges count as private)
        HTTP_X_FORWARDED_FOR="1.2.3.4",
    )
    assert not clientip.proxy_flag_set()
    login(api, student.username, student.password, student.device_id, address=peer, HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert clientip.proxy_flag_set()
    body = status(api, settings)
    assert body["status"] == "degraded"
    assert body["checks"]["proxy"]["ok"] is False
    assert body["checks"]["proxy"]["peer"] == peer
    from django_redis import get_redis_connection

    ttl = get_redis_connection("default").ttl(clientip.proxy_flag_key())
    assert 0 < ttl <= clientip.PROXY_FLAG_TTL
    # Once the operator declares the proxy, the check reads ok again.
    settings.MEMORA_TRUSTED_PROXIES = [peer]
    assert status(api, settings)["checks"]["proxy"] == {"ok": True}


def test_the_flag_is_raised_by_the_register_path_too():
    clientip.forget_proxy_flag_throttle()
    request = RequestFactory().post("/", REMOTE_ADDR="172.16.0.9", HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert clientip.client_ip(request) == "172.16.0.9"  # not trusted: still the peer
    assert clientip.proxy_flag_set()

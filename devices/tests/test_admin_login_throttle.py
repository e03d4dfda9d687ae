"""Statement 11: the admin's sign-in goes through the API login's limiter. Many wrong passwords and
then the right one, as an attacker would; a support agent's own browser (its signed device cookie)
keeps signing in while a stranger sprays the agent's username."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client

from devices.adminlogin import COOKIE_NAME
from devices.models import LoginFailure

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "support-pass-123"


@pytest.fixture
def agent() -> User:
    return User.objects.create_user(username=f"agent_{uuid.uuid4().hex[:6]}", password=PASSWORD, is_staff=True)


def sign_in(client: Client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_wrong_passwords_then_the_right_one_is_refused_with_a_form_error(agent, settings):
    client = Client()
    for _ in range(10):
        page = sign_in(client, agent.username, "wrong")
        assert page.status_code == 200
        assert "Please enter the correct username and password" in page.text
    refused = sign_in(client, agent.username, PASSWORD)
    assert refused.status_code == 200  # the form again, not a redirect into the admin
    assert "Too many failed sign-in attempts" in refused.text
    assert "_auth_user_id" not in client.session
    # Another address is not locked by this one's failures.
    assert sign_in(Client(), agent.username, PASSWORD, address="192.0.2.7").status_code == 302


def test_a_locked_attempt_is_refused_before_hashing_and_not_counted(agent, settings, monkeypatch):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER_IP = (2, 900)
    client = Client()
    for _ in range(2):
        sign_in(client, agent.username, "wrong")
    calls = []
    from django.contrib.auth import forms as auth_forms

    real = auth_forms.authenticate
    # authenticate() is where the password gets hashed (for an unknown username too).
    monkeypatch.setattr(auth_forms, "authenticate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert "Too many failed sign-in attempts" in sign_in(client, agent.username, PASSWORD).text
    assert calls == []
    assert LoginFailure.objects.count() == 0  # and the refused attempt was not counted anywhere
    from django_redis import get_redis_connection

    from devices import loginlimits

    fail_ip = (
        f"{settings.MEMORA_REDIS_KEY_PREFIX}:rl:{{u:{loginlimits.username_key(agent.username)}}}:fail_ip:127.0.0.1"
    )
    assert get_redis_connection("default").get(fail_ip) == b"2"


def test_the_admin_and_the_api_share_the_username_counter(agent, api, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (4, 3600)
    for i in range(4):
        sign_in(Client(), agent.username, "wrong", address=f"192.0.2.{i + 1}")
    # The API login of that username is locked too (the same limiter, whatever the account is).
    response = api.post(
        "/api/v1/auth/login/",
        {"username": agent.username, "password": PASSWORD},
        format="json",
        HTTP_X_DEVICE_ID=str(uuid.uuid4()),
    )
    assert response.status_code == 429


def test_the_agents_own_browser_is_held_only_to_its_own_counter(agent, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (20, 3600)
    own = Client()
    first = sign_in(own, agent.username, PASSWORD)
    assert first.status_code == 302
    cookie = first.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["max-age"] == 30 * 24 * 3600 and cookie["path"] == "/admin/"
    own.post("/admin/logout/")
    # A stranger sprays the username from many addresses: the username is locked for them ...
    for i in range(20):
        sign_in(Client(), agent.username, "guess", address=f"198.51.100.{i + 1}")
    assert "Too many failed sign-in attempts" in sign_in(Client(), agent.username, PASSWORD, "203.0.113.3").text
    # ... and the support desk's browser signs in all the same.
    assert sign_in(own, agent.username, PASSWORD).status_code == 302


def test_the_device_cookie_counts_its_own_failures(agent, settings):
    own = Client()
    assert sign_in(own, agent.username, PASSWORD).status_code == 302
    own.post("/admin/logout/")
    for _ in range(10):
        sign_in(own, agent.username, "typo")
    assert "Too many failed sign-in attempts" in sign_in(own, agent.username, PASSWORD).text
    # The lock is that browser's alone.
    assert sign_in(Client(), agent.username, PASSWORD).status_code == 302


def test_a_cookie_of_another_username_or_forged_is_no_device(agent, settings):
    settings.MEMORA_RATE_LOGIN_FAILURES_USER = (3, 3600)
    other = User.objects.create_user(username=f"other_{uuid.uuid4().hex[:6]}", password=PASSWORD, is_staff=True)
    browser = Client()
    assert sign_in(browser, other.username, PASSWORD).status_code == 302
    browser.post("/admin/logout/")
    for i in range(3):
        sign_in(Client(), agent.username, "guess", address=f"198.51.100.{i + 1}")
    assert "Too many failed sign-in attempts" in sign_in(browser, agent.username, PASSWORD).text
    forged = Client()
    forged.cookies[COOKIE_NAME] = "eyJ1IjoiYWJjIiwiZCI6IjEifQ:forged:signature"
    assert "Too many failed sign-in attempts" in sign_in(forged, agent.username, PASSWORD).text


def test_admin_failures_are_counted_in_the_database_while_redis_is_away(agent, settings):
    settings.MEMORA_HOT_STATE = "database"
    client = Client()
    for _ in range(10):
        sign_in(client, agent.username, "wrong")
    assert LoginFailure.objects.count() == 10
    assert "Too many failed sign-in attempts" in sign_in(client, agent.username, PASSWORD).text

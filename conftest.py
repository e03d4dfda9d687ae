"""Shared fixtures: real MariaDB (pytest-django's test database) and the real Redis on this
machine, each test under its own Redis key prefix so tests never see each other's keys and never
touch keys they did not write."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from core import hotstate, ratelimit, redisconn

# The Sentinel and Cluster fixtures (topology, pointer, cluster, sentinel_set).
pytest_plugins = ["memora.tests.topologies"]


@pytest.fixture(autouse=True)
def redis_namespace(settings: Any) -> Iterator[str]:
    prefix = f"memtest:{uuid.uuid4().hex[:12]}"
    settings.MEMORA_REDIS_KEY_PREFIX = prefix
    hotstate.breaker.reset()
    ratelimit.local.clear()
    # A refusal in an earlier test makes every connection probe its server first for 5 s.
    redisconn._suspect_until = 0.0
    yield prefix
    hotstate.breaker.reset()
    # A fault test may have pointed the app at a private redis-server it already stopped.
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
        client = hotstate.connection()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


class Student:
    """A student app on one device: registers, logs in, and sends the device's headers."""

    password = "correct horse battery"

    def __init__(self, client: APIClient, username: str, device_id: str | None = None) -> None:
        self.client = client
        self.username = username
        self.device_id = device_id or str(uuid.uuid4())
        self.token: str | None = None
        self.player_id: int | None = None

    def register(self, **extra: Any) -> Any:
        body = {"username": self.username, "password": self.password, "display_name": self.username.title(), **extra}
        response = self.client.post("/api/v1/auth/register/", body, format="json")
        if response.status_code == 201:
            self.player_id = response.json()["id"]
        return response

    def login(self, password: str | None = None, **extra: Any) -> Any:
        body = {"username": self.username, "password": password or self.password, **extra}
        response = self.client.post("/api/v1/auth/login/", body, format="json", HTTP_X_DEVICE_ID=self.device_id)
        if response.status_code == 200:
            self.token = response.json()["token"]
            self.player_id = response.json()["player"]["id"]
        return response

    def login_through_service(self, **login: Any) -> Student:
        """Log in on this device through the login service (no HTTP, no Argon2): for a test whose
        subject is not the login. ``login``: device_name, platform, replace_device_id."""
        # Imported here: the root conftest loads before Django's apps are ready.
        from devices.tests.factories import logged_in
        from players.models import PlayerProfile

        profile = PlayerProfile.objects.select_related("user").get(pk=self.player_id)
        self.token = logged_in(profile=profile, device_id=self.device_id, **login).token
        return self

    def on_device(self, device_id: str | None = None) -> Student:
        other = Student(self.client, self.username, device_id)
        other.player_id = self.player_id
        return other

    def headers(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.token}", "HTTP_X_DEVICE_ID": self.device_id}

    def get(self, path: str, **extra: Any) -> Any:
        return self.client.get(path, **{**self.headers(), **extra})

    def post(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.client.post(path, body, format="json", **{**self.headers(), **extra})

    def patch(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.client.patch(path, body, format="json", **{**self.headers(), **extra})

    def delete(self, path: str, **extra: Any) -> Any:
        return self.client.delete(path, **{**self.headers(), **extra})


@pytest.fixture
def student_factory(api: APIClient) -> Any:
    """A student, logged in on one device unless ``login=False``. Made by the factories and the
    login service (no HTTP, one shared Argon2 hash): ``http=True`` registers and logs in over HTTP
    instead, for a test whose subject is that contract."""
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, login: bool = True, http: bool = False, **register_extra: Any) -> Student:
        student = Student(api, username or f"student{next(counter)}_{uuid.uuid4().hex[:6]}")
        if http:
            assert student.register(**register_extra).status_code == 201
            if login:
                assert student.login().status_code == 200
            return student
        from players.tests.factories import PASSWORD, PlayerFactory

        assert student.password == PASSWORD
        profile = PlayerFactory(
            user__username=student.username,
            display_name=register_extra.pop("display_name", student.username.title()),
            **register_extra,
        )
        student.player_id = profile.pk
        return student.login_through_service() if login else student

    return make


@pytest.fixture
def student(student_factory: Any) -> Student:
    return student_factory()


def pytest_configure() -> None:
    django_settings.MEMORA_RECONCILER_ENABLED = False


_UUID_LIKE = re.compile(r"^[0-9a-fA-F-]{30,40}$")


def pytest_make_parametrize_id(config: Any, val: object, argname: str) -> str | None:
    # Generated UUIDs would give each xdist worker different test ids; name them by kind.
    if isinstance(val, str) and _UUID_LIKE.match(val):
        return f"{argname}-uuid-like"
    return None

"""Factories of the identity half: devices and sessions through the login service itself (so their
Redis copy and outbox are what a real login leaves), service keys, staff — no HTTP, one shared
Argon2 hash."""

from __future__ import annotations

import uuid
from typing import Any

import factory
from django.contrib.auth.models import User

from devices import servicekeys, services
from devices.models import ServiceApiKey
from players.tests.factories import PlayerFactory, password_hash


def logged_in(*, profile: Any = None, device_id: str | None = None, **login: Any) -> services.LoginResult:
    """A student (new unless given) logged in on a device through ``session_login``: the device
    authorized, the one live session started, the Redis copy written."""
    return services.session_login(
        profile=profile or PlayerFactory(),
        device_id=device_id or str(uuid.uuid4()),
        device_name=login.pop("device_name", "phone"),
        platform=login.pop("platform", "android"),
        **login,
    )


def service_key(
    *, scopes: tuple[str, ...] = ("award_xp", "restore_streak"), name: str = ""
) -> tuple[ServiceApiKey, str]:
    """A service API key and its plain text (shown once)."""
    return servicekeys.service_key_create(name=name or f"svc-{uuid.uuid4().hex[:6]}", scopes=list(scopes), actor=None)


class StaffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"staff{n}_{uuid.uuid4().hex[:6]}")
    password = factory.LazyFunction(password_hash)
    is_staff = True

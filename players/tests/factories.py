from __future__ import annotations

import uuid
from functools import lru_cache

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

from players.models import PlayerProfile

PASSWORD = "correct horse battery"


@lru_cache(maxsize=1)
def password_hash() -> str:
    # One real Argon2 hash, shared: factories should not pay 23 ms per student.
    return make_password(PASSWORD)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}_{uuid.uuid4().hex[:8]}")
    password = factory.LazyFunction(password_hash)


class PlayerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlayerProfile

    user = factory.SubFactory(UserFactory)
    display_name = factory.Sequence(lambda n: f"Student {n}")
    timezone = "UTC"

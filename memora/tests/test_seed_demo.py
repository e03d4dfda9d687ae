"""Statement 11: demo accounts with known passwords only in `make run`'s embedded mode; against a
real database nothing, or on request random passwords printed once."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from memora.management.commands import seed_demo
from memora_project import run

pytestmark = pytest.mark.django_db(transaction=True)


def test_random_passwords_are_printed_once_and_work():
    out = io.StringIO()
    call_command("seed_demo", "--random-passwords", stdout=out)
    text = out.getvalue()
    assert seed_demo.STUDENT_PASSWORD not in text and seed_demo.SUPPORT_PASSWORD not in text
    support = re.search(rf"{seed_demo.SUPPORT_USERNAME} / (\S+)", text)
    assert support is not None
    assert authenticate(username=seed_demo.SUPPORT_USERNAME, password=support.group(1)) is not None
    assert authenticate(username=seed_demo.SUPPORT_USERNAME, password=seed_demo.SUPPORT_PASSWORD) is None
    # A second run neither resets nor shows the passwords.
    again = io.StringIO()
    call_command("seed_demo", "--random-passwords", stdout=again)
    assert support.group(1) not in again.getvalue()
    assert "password unchanged" in again.getvalue()


def test_make_run_seeds_only_in_embedded_mode(monkeypatch):
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(run, "_manage", lambda env, *args, **kw: calls.append(args) or "seeded")
    assert run._seed_demo({}) == "seeded"
    assert calls == [("seed_demo",)]
    calls.clear()
    note = run._seed_demo({"DATABASE_URL": "mysql://db/memora"})
    assert calls == [] and "none" in note
    assert not get_user_model().objects.filter(username=seed_demo.SUPPORT_USERNAME).exists()
    run._seed_demo({"DATABASE_URL": "mysql://db/memora", "MEMORA_SEED_DEMO": "1"})
    assert calls == [("seed_demo", "--random-passwords")]

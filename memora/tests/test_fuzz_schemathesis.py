"""Schemathesis against /api/schema/, in-process through the WSGI application.

Every generated request (valid and invalid bodies, paths, queries and headers) must get an answer
that is not a 5xx, whose status the schema documents for that operation, and whose body and
headers match what the schema says for that status. Each case runs as a fresh student, registered
and logged in through the HTTP API (so a logout or a device removal in one case cannot spoil the
next), or with a fresh service key for the service operations. The seed is fixed and generation
derandomized: a run is reproducible, and a failure prints the request that reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devices import servicekeys
from memora_project.wsgi import application
from wallets import selectors

MAX_EXAMPLES = 25  # per operation and generation mode; the whole file stays well under 2 minutes
SEED = 20261126

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # Stateful links are not declared; each operation is fuzzed on its own.
        "phases": {"stateful": {"enabled": False}},
    }
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=CONFIG)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

UNLIMITED = 1_000_000


@pytest.fixture
def fuzz_settings(settings: Any) -> None:
    """Rate limits out of the way: hundreds of registrations and logins come from one address."""
    for name in (
        "MEMORA_RATE_LOGIN_FAILURES_USER_IP",
        "MEMORA_RATE_LOGIN_FAILURES_USER",
        "MEMORA_RATE_LOGIN_IP",
        "MEMORA_RATE_REGISTER_IP",
        "MEMORA_RATE_LESSONS_PLAYER",
        "MEMORA_RATE_SERVICE_KEY",
    ):
        _, window = getattr(settings, name)
        setattr(settings, name, (UNLIMITED, window))


@pytest.fixture
def credentials_for(student_factory: Callable[..., Any]) -> Callable[[Any], dict[str, str]]:
    """The headers of a fresh caller of the kind the case's operation admits."""

    def make(case: Any) -> dict[str, str]:
        security = case.operation.definition.raw.get("security", [])
        if not any(security):
            return {}  # register and login: anyone
        if any("serviceKey" in requirement for requirement in security):
            _, raw = servicekeys.service_key_create(name="fuzz", scopes=["award_xp", "restore_streak"], actor=None)
            return {"Authorization": f"Api-Key {raw}"}
        student = student_factory()
        return {"Authorization": f"Bearer {student.token}", "X-Device-ID": student.device_id}

    return make


@schema.parametrize()
# The fixtures are set up once per operation on purpose: each case makes its own caller with them.
@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.django_db(transaction=True)  # logins update Redis in on_commit hooks
@pytest.mark.usefixtures("fuzz_settings")
def test_api_answers_within_its_schema(case: Any, credentials_for: Callable[[Any], dict[str, str]]) -> None:
    case.call_and_validate(headers=credentials_for(case), checks=CHECKS)


# --- explicit cases: what the hardening review found (issue 11) -----------------------------------
# Each runs through the same checks as the generated cases (documented status, body and headers
# within the schema) and must answer the status named here.

LESSON = "/api/v1/lessons/{lesson_id}/complete/"
HISTORY = "/api/v1/wallet/history/"
REGISTER = "/api/v1/auth/register/"
AWARD = "/api/v1/wallet/xp/"
RESTORE = "/api/v1/players/{player_id}/streak/restore/"
CRAFTED_CURSOR = "MDAwMS0wMS0wMVQwMDowMDowMCsxNDowMHwwYjZjMWMzZS00ZjdhLTRkN2UtOWE1OS0zZjFmMGMyYTlkMTA"

EXPLICIT = [
    # (name, path, method, Case arguments, credentials, status)
    *(
        (f"lesson-body-{label}", LESSON, "POST", {"body": body}, "student", 400)
        for label, body in (("false", False), ("zero", 0), ("list", []), ("null", None))
    ),
    ("page-size-superscript", HISTORY, "GET", {"query": {"page_size": "²"}}, "student", 400),
    ("page-size-arabic-digit", HISTORY, "GET", {"query": {"page_size": "٣"}}, "student", 400),
    ("crafted-cursor", HISTORY, "GET", {"query": {"cursor": CRAFTED_CURSOR}}, "student", 400),
    ("award-reason-zero", AWARD, "POST", {"body": {"player": 1, "amount": 5, "reason": 0}}, "service", 400),
    ("award-without-authorization", AWARD, "POST", {"body": {"player": 1, "amount": 5, "reason": "x"}}, None, 401),
    ("restore-without-authorization", RESTORE, "POST", {"body": {"reason": "x"}}, None, 401),
    # Just past the bounds the schema states (test_schema_bounds.py checks they are the server's).
    ("lesson-id-65-characters", LESSON, "POST", {"path_parameters": {"lesson_id": "a" * 65}}, "student", 400),
    ("page-size-over-the-maximum", HISTORY, "GET", {"query": {"page_size": selectors.MAX_PAGE + 1}}, "student", 400),
    (
        "award-amount-over-the-maximum",
        AWARD,
        "POST",
        {"body": {"player": 1, "amount": settings.MEMORA_XP_MANUAL_MAX + 1, "reason": "x"}},
        "service",
        400,
    ),
    (
        "register-password-too-short",
        REGISTER,
        "POST",
        {"body": {"username": "shortpass", "password": "Zq7#x", "display_name": "Short"}},
        None,
        400,
    ),
]


@pytest.mark.parametrize(
    ("path", "method", "arguments", "caller", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in EXPLICIT],
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fuzz_settings")
def test_explicit_hostile_inputs(
    student_factory: Callable[..., Any],
    path: str,
    method: str,
    arguments: dict[str, Any],
    caller: str | None,
    expected: int,
) -> None:
    operation = schema[path][method]
    headers: dict[str, str] = {}
    path_parameters: dict[str, Any] = {}
    if caller == "student":
        student = student_factory()
        headers = {"Authorization": f"Bearer {student.token}", "X-Device-ID": student.device_id}
    elif caller == "service":
        _, raw = servicekeys.service_key_create(name="explicit", scopes=["award_xp"], actor=None)
        headers = {"Authorization": f"Api-Key {raw}"}
    if "{lesson_id}" in path:
        path_parameters["lesson_id"] = "algebra-1"
    if "{player_id}" in path:
        path_parameters["player_id"] = 1
    path_parameters |= arguments.pop("path_parameters", {})
    if method == "POST":
        arguments.setdefault("body", {})
    if method == "POST":
        headers["Idempotency-Key"] = "explicit-1"
    case = operation.Case(
        path_parameters=path_parameters or None, headers=headers, media_type="application/json", **arguments
    )
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == expected, response.text

"""The schema states every bound the server enforces, and no bound it does not.

Walked in two directions. From the code: each request body's serializer (found through
drf-spectacular's component registry, so a new serializer is walked without being listed here),
each field's type, required/nullable, length, range and pattern; the settings behind the rules
(AUTH_PASSWORD_VALIDATORS, MEMORA_XP_MANUAL_MAX); and the functions that check headers and paths
(``device_id_normalize``, ``LESSON_ID_RE``, ``key_from_header``, the device-proof shape). From the
schema: the edges it states are sent to the server, which must accept the edge and refuse one
step past it. A bound changed on one side only fails here.

OpenAPI patterns are ECMA-262 regular expressions: ``^`` and ``$`` anchor the whole value and ``$``
does not admit a trailing newline (Python's does). ``ecma_matches`` reads them that way.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import password_validation
from django.core import validators as django_validators
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers
from rest_framework import validators as drf_validators

from core.errors import ApiError, rate_limited, service_unavailable
from devices import servicekeys, tokens
from memora.tests.test_schema_contract import SCHEMA_URL, SchemaDoc
from players.serializers import NO_CONTROL_CHARACTERS, no_control_characters
from wallets import idempotency, rules, selectors

# Validators drf-spectacular turns into schema keywords (checked field by field below).
MAPPED_VALIDATORS = (
    django_validators.RegexValidator,
    django_validators.MaxLengthValidator,
    django_validators.MinLengthValidator,
    django_validators.MaxValueValidator,
    django_validators.MinValueValidator,
)
# DRF puts these on every CharField; the API's description states them once for all strings.
EVERY_STRING_VALIDATORS = (
    django_validators.ProhibitNullCharactersValidator,
    drf_validators.ProhibitSurrogateCharactersValidator,
)
EVERY_STRING_STATEMENT = "No string field admits U+0000 or a lone surrogate"
# Other validators: what the field's description must say instead (no portable pattern for it).
DESCRIBED_VALIDATORS: dict[Callable[[str], None], str] = {no_control_characters: NO_CONTROL_CHARACTERS}
# validate_<field> / validate() methods hide bounds from the schema: none is allowed unless named
# here with where its rule is stated.
HIDDEN_VALIDATION_ALLOWED: dict[str, str] = {}


def ecma_matches(pattern: str, value: str) -> bool:
    """``pattern`` (anchored ``^…$``, no top-level alternation) as an ECMA regex on the whole value."""
    assert pattern.startswith("^") and pattern.endswith("$"), f"unanchored pattern {pattern!r}"
    body = pattern[1:-1]
    assert "$" not in body.replace("\\$", "") and "|" not in body, f"pattern too complex to emulate: {pattern!r}"
    return re.fullmatch(body, value) is not None


@pytest.fixture(scope="module")
def schema_doc() -> SchemaDoc:
    response = Client().get(SCHEMA_URL)
    assert response.status_code == 200, response.content[:500]
    return SchemaDoc(json.loads(response.content))


@pytest.fixture(scope="module")
def request_serializers() -> dict[str, type[serializers.Serializer]]:
    """Request-body component name → the serializer class it was generated from."""
    generator = SchemaGenerator()
    generator.get_schema(request=None, public=True)
    found: dict[str, type[serializers.Serializer]] = {}
    # The registry keeps the object behind each component; it has no public accessor.
    for (name, kind), component in generator.registry._components.items():
        if kind == "schemas" and isinstance(component.object, serializers.Serializer) and name.endswith("Request"):
            found[name] = type(component.object)
    return found


def _operation(doc: SchemaDoc, method: str, path: str) -> dict[str, Any]:
    operation = doc.document["paths"][path][method.lower()]
    assert isinstance(operation, dict)
    return operation


def _parameter(doc: SchemaDoc, method: str, path: str, name: str) -> dict[str, Any]:
    for parameter in _operation(doc, method, path).get("parameters", []):
        if parameter["name"] == name:
            return dict(parameter)
    raise AssertionError(f"{method} {path} has no parameter {name}")


# --- request bodies against their serializers -----------------------------------------------------


def _expected(field: serializers.Field) -> dict[str, Any]:
    """The keywords a property must carry for what ``field`` accepts (absent: no such bound)."""
    expected: dict[str, Any] = {"nullable": bool(field.allow_null)}
    if isinstance(field, serializers.IntegerField):
        expected |= {"type": "integer", "minimum": field.min_value, "maximum": field.max_value}
    elif isinstance(field, serializers.CharField):
        regexes = [v for v in field.validators if isinstance(v, django_validators.RegexValidator)]
        assert len(regexes) <= 1, f"{field.field_name}: one pattern per field"
        pattern = regexes[0].regex.pattern.replace(r"\Z", "$").replace(r"\A", "^") if regexes else None
        minimum = field.min_length if field.min_length is not None else (0 if field.allow_blank else 1)
        expected |= {
            "type": "string",
            "minLength": minimum,
            "maxLength": field.max_length,
            "pattern": pattern,
            "format": None,
        }
    elif isinstance(field, serializers.UUIDField):
        expected |= {"type": "string", "format": "uuid"}
    else:
        raise AssertionError(f"{field.field_name}: {type(field).__name__} is not walked yet: add it to _expected")
    return expected


def _found(schema: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    found = {key: schema.get(key) for key in expected}
    found["nullable"] = bool(schema.get("nullable"))
    if "minLength" in expected:
        found["minLength"] = schema.get("minLength", 0)
    return found


def test_every_request_body_has_its_serializer(
    schema_doc: SchemaDoc, request_serializers: dict[str, type[serializers.Serializer]]
) -> None:
    components = {n for n in schema_doc.document["components"]["schemas"] if n.endswith("Request")}
    assert components == set(request_serializers)
    assert len(components) >= 6  # register, login, profile, lesson, award, restore


def test_request_bodies_state_the_serializers_bounds(
    schema_doc: SchemaDoc, request_serializers: dict[str, type[serializers.Serializer]]
) -> None:
    description = schema_doc.document["info"]["description"]
    for name, serializer_class in request_serializers.items():
        component = schema_doc.resolve({"$ref": f"#/components/schemas/{name}"})
        serializer = serializer_class()  # a new instance: fields built from the current settings
        properties = component["properties"]
        assert set(properties) == set(serializer.fields), name
        patched = name.startswith("Patched")
        for field_name, field in serializer.fields.items():
            where = f"{name}.{field_name}"
            schema = schema_doc.resolve(properties[field_name])
            expected = _expected(field)
            assert _found(schema, expected) == expected, where
            if not patched:
                assert (field_name in component.get("required", [])) == field.required, where
            for validator in field.validators:
                if isinstance(validator, MAPPED_VALIDATORS):
                    continue
                if isinstance(validator, EVERY_STRING_VALIDATORS):
                    assert EVERY_STRING_STATEMENT in description, where
                    continue
                statement = DESCRIBED_VALIDATORS.get(validator)
                assert statement is not None, f"{where}: {validator!r} is a bound the schema does not state"
                assert statement in schema.get("description", ""), where
        hidden = [f"validate_{f}" for f in serializer.fields if hasattr(serializer_class, f"validate_{f}")]
        if serializer_class.validate is not serializers.Serializer.validate:
            hidden.append("validate")
        for attr in hidden:
            assert f"{serializer_class.__name__}.{attr}" in HIDDEN_VALIDATION_ALLOWED, (
                f"{serializer_class.__name__}.{attr} checks a bound the schema cannot see: make it a field bound"
            )


def test_a_hidden_bound_is_caught() -> None:
    # The walker itself: a max_length the schema does not state, and one it states wrongly.
    field = serializers.CharField(max_length=10)
    field.field_name = "x"
    expected = _expected(field)
    assert _found({"type": "string", "minLength": 1}, expected) != expected
    assert _found({"type": "string", "minLength": 1, "maxLength": 11}, expected) != expected
    assert _found({"type": "string", "minLength": 1, "maxLength": 10}, expected) == expected


# --- the rules that live in settings --------------------------------------------------------------


def _password_min_length() -> int:
    return max(
        [1]
        + [
            v.min_length
            for v in password_validation.get_default_password_validators()
            if isinstance(v, password_validation.MinimumLengthValidator)
        ]
    )


def test_register_password_states_the_password_validators(schema_doc: SchemaDoc) -> None:
    password = schema_doc.resolve({"$ref": "#/components/schemas/RegisterInputRequest"})["properties"]["password"]
    assert password["minLength"] == _password_min_length() == 8
    for rule in password_validation.password_validators_help_texts():
        assert rule in password["description"]
    # Login takes any password up to the bound: a rule changed later must not lock anyone out.
    login = schema_doc.resolve({"$ref": "#/components/schemas/LoginInputRequest"})["properties"]["password"]
    assert login["minLength"] == 1


def test_the_schema_follows_the_settings(settings: Any) -> None:
    settings.MEMORA_XP_MANUAL_MAX = 77
    settings.AUTH_PASSWORD_VALIDATORS = [
        {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}}
    ]
    doc = SchemaDoc(json.loads(Client().get(SCHEMA_URL).content))
    schemas = doc.document["components"]["schemas"]
    assert schemas["ServiceAwardInputRequest"]["properties"]["amount"]["maximum"] == 77
    password = schemas["RegisterInputRequest"]["properties"]["password"]
    assert password["minLength"] == 12
    assert "too similar" not in password["description"]


def test_award_amount_maximum_is_the_setting(schema_doc: SchemaDoc, settings: Any) -> None:
    amount = schema_doc.resolve({"$ref": "#/components/schemas/ServiceAwardInputRequest"})["properties"]["amount"]
    assert (amount["minimum"], amount["maximum"]) == (1, settings.MEMORA_XP_MANUAL_MAX)


# --- paths, queries and headers against the functions that check them -----------------------------

LESSON = "/api/v1/lessons/{lesson_id}/complete/"
HISTORY = "/api/v1/wallet/history/"
DEVICE = "/api/v1/devices/{device_id}/"


def test_lesson_id_pattern_is_lesson_id_re(schema_doc: SchemaDoc) -> None:
    pattern = _parameter(schema_doc, "POST", LESSON, "lesson_id")["schema"]["pattern"]
    assert pattern == f"^{rules.LESSON_ID_RE.pattern}$"
    samples = ["a", "A" * 64, "a" * 65, "-a", "a.b_c-9", "a\n", "", "é", "a b", "a/b", "_"]
    for sample in samples:
        assert ecma_matches(pattern, sample) == (rules.LESSON_ID_RE.fullmatch(sample) is not None), repr(sample)


def test_device_id_is_a_string_with_the_uuid4_pattern(schema_doc: SchemaDoc) -> None:
    """Not ``format: uuid``: a generated client would put a UUID object into the header."""
    v4 = str(uuid.uuid4())
    samples = [v4, v4.upper(), str(uuid.uuid1()), v4.replace("-", ""), "{" + v4 + "}", "", "x" * 36]
    samples += [v4[:14] + "5" + v4[15:], v4[:19] + "c" + v4[20:], v4 + "\n"]
    for method, path, operation in schema_doc.operations():
        for parameter in operation.get("parameters", []):
            if parameter["name"] not in ("X-Device-ID", "device_id"):
                continue
            schema = parameter["schema"]
            assert schema["type"] == "string" and "format" not in schema, (method, path, parameter["name"])
            for sample in samples:
                accepted = tokens.device_id_normalize(sample) is not None and sample == sample.strip()
                assert ecma_matches(schema["pattern"], sample) == accepted, (method, path, repr(sample))
    # The server also trims surrounding whitespace, which the schema does not promise.
    assert tokens.device_id_normalize(f" {v4} ") == v4


def test_device_proof_header_is_the_proof_shape(schema_doc: SchemaDoc) -> None:
    pattern = _parameter(schema_doc, "POST", "/api/v1/auth/login/", "X-Device-Proof")["schema"]["pattern"]
    samples = [tokens.device_proof_new(), "dp_" + "a" * 42, "dp_" + "a" * 43, "dp_" + "a" * 86, "dp_" + "a" * 87]
    samples += ["dp_" + "a+" * 22, "mem_1_" + "a" * 43, ""]
    for sample in samples:
        assert ecma_matches(pattern, sample) == tokens.device_proof_valid_shape(sample), repr(sample)


def _key_accepted(raw: str) -> bool:
    try:
        idempotency.key_from_header(raw)
    except ApiError:
        return False
    return True


def test_idempotency_key_pattern_is_what_the_server_takes(schema_doc: SchemaDoc) -> None:
    samples = ["", "k", " ", "~", "x" * 255, "x" * 256, "é", "a\x7f", "a\tb", "key-1:2/3"]
    for method, path, operation in schema_doc.operations():
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "Idempotency-Key" and parameter["in"] == "header":
                for sample in samples:
                    assert ecma_matches(parameter["schema"]["pattern"], sample) == _key_accepted(sample), (
                        method,
                        path,
                        repr(sample),
                    )


def test_history_query_bounds_are_the_selectors(schema_doc: SchemaDoc) -> None:
    page_size = _parameter(schema_doc, "GET", HISTORY, "page_size")["schema"]
    assert page_size == {
        "type": "integer",
        "minimum": 1,
        "maximum": selectors.MAX_PAGE,
        "default": selectors.DEFAULT_PAGE,
    }
    cursor = _parameter(schema_doc, "GET", HISTORY, "cursor")["schema"]
    assert cursor["maxLength"] == selectors.CURSOR_MAX_LENGTH


# --- headers and statuses every operation can answer ----------------------------------------------


def test_every_operation_documents_retry_after_on_429_and_503(schema_doc: SchemaDoc) -> None:
    for method, path, operation in schema_doc.operations():
        for status in ("429", "503"):
            assert status in operation["responses"], (method, path, status)
            header = operation["responses"][status]["headers"]["Retry-After"]
            assert header["required"] is True and header["schema"] == {"type": "integer"}, (method, path, status)
    # What the server sends there: whole seconds, at least 1.
    for error in (rate_limited(0.2), rate_limited(2.5), service_unavailable()):
        assert re.fullmatch(r"[1-9][0-9]*", error.headers()["Retry-After"]), error.headers()


def test_every_operation_documents_405_with_allow_and_406(schema_doc: SchemaDoc) -> None:
    for method, path, operation in schema_doc.operations():
        responses = operation["responses"]
        assert {"405", "406"} <= set(responses), (method, path)
        assert responses["405"]["headers"]["Allow"]["required"] is True, (method, path)


def test_replayed_writes_document_the_replay_header(schema_doc: SchemaDoc) -> None:
    for method, path, operation in schema_doc.operations():
        names = {p["name"] for p in operation.get("parameters", [])}
        if "Idempotency-Key" not in names:
            continue
        success = next(status for status in operation["responses"] if status.startswith("2"))
        header = operation["responses"][success]["headers"]["Idempotent-Replayed"]
        assert header["schema"] == {"type": "string", "enum": ["true"]}, (method, path)
        assert not header.get("required"), (method, path)  # absent on a first answer


# --- the edges the schema states, sent to the server ----------------------------------------------

uses_db = pytest.mark.django_db(transaction=True)  # logins update Redis in on_commit hooks


def _caller_headers(operation: dict[str, Any], student: Any, service_key: str) -> dict[str, str]:
    security = operation.get("security", [])
    if any("serviceKey" in requirement for requirement in security):
        return {"HTTP_AUTHORIZATION": f"Api-Key {service_key}"}
    if any("deviceSession" in requirement for requirement in security):
        return dict(student.headers())
    return {}


@pytest.fixture
def service_key() -> str:
    _, raw = servicekeys.service_key_create(name="bounds", scopes=["award_xp", "restore_streak"], actor=None)
    return raw


def _concrete(path: str, student: Any) -> str:
    return path.format(lesson_id="algebra-1", device_id=str(uuid.uuid4()), player_id=student.player_id)


@uses_db
def test_every_path_answers_405_with_the_methods_it_documents(
    schema_doc: SchemaDoc, student: Any, service_key: str
) -> None:
    client = Client()
    for path, item in schema_doc.document["paths"].items():
        documented = {m.upper() for m in item if m in ("get", "post", "put", "patch", "delete")}
        other = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in documented)
        headers = _caller_headers(next(iter(item.values())), student, service_key)
        response = client.generic(other, _concrete(path, student), **headers)
        assert response.status_code == 405, (other, path, response.content)
        assert response.json()["code"] == "method_not_allowed"
        allowed = {m.strip() for m in response["Allow"].split(",")}
        assert documented <= allowed <= documented | {"HEAD", "OPTIONS"}, (path, allowed)


@uses_db
def test_every_operation_answers_406_to_an_accept_without_json(
    schema_doc: SchemaDoc, student: Any, service_key: str
) -> None:
    client = Client()
    for method, path, operation in schema_doc.operations():
        headers = _caller_headers(operation, student, service_key)
        response = client.generic(
            method, _concrete(path, student), "{}", content_type="application/json", HTTP_ACCEPT="text/html", **headers
        )
        assert response.status_code == 406, (method, path, response.content)
        assert response.json()["code"] == "not_acceptable"


@uses_db
def test_page_size_edges(schema_doc: SchemaDoc, student: Any) -> None:
    page_size = _parameter(schema_doc, "GET", HISTORY, "page_size")["schema"]
    for value, status in (
        (page_size["minimum"], 200),
        (page_size["maximum"], 200),
        (page_size["minimum"] - 1, 400),
        (page_size["maximum"] + 1, 400),
    ):
        response = student.get(HISTORY, data={"page_size": value})
        assert response.status_code == status, (value, response.content)


@uses_db
def test_lesson_id_edges(schema_doc: SchemaDoc, student: Any) -> None:
    # The longest id the pattern admits is accepted; one longer, or with a trailing newline, is not.
    for lesson_id, status in (("a" * 64, 201), ("b" * 65, 400), ("c%0A", 400), ("-d", 400)):
        response = student.post(
            f"/api/v1/lessons/{lesson_id}/complete/", {}, HTTP_IDEMPOTENCY_KEY=f"edge-{lesson_id[:8]}"
        )
        assert response.status_code == status, (lesson_id, response.content)
        if status == 400:
            assert "lesson_id" in response.json()["errors"]


@uses_db
def test_award_amount_edges(schema_doc: SchemaDoc, student: Any, service_key: str) -> None:
    amount = schema_doc.resolve({"$ref": "#/components/schemas/ServiceAwardInputRequest"})["properties"]["amount"]
    client = Client()
    for value, status in ((amount["maximum"], 201), (amount["maximum"] + 1, 400), (amount["minimum"] - 1, 400)):
        response = client.post(
            "/api/v1/wallet/xp/",
            {"player": student.player_id, "amount": value, "reason": "edge"},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Api-Key {service_key}",
            HTTP_IDEMPOTENCY_KEY=f"edge-{value}",
        )
        assert response.status_code == status, (value, response.content)


@uses_db
def test_password_edges(schema_doc: SchemaDoc, api: Any) -> None:
    password = schema_doc.resolve({"$ref": "#/components/schemas/RegisterInputRequest"})["properties"]["password"]
    shortest = password["minLength"]
    for length, status in ((shortest, 201), (shortest - 1, 400), (password["maxLength"] + 1, 400)):
        body = {"username": f"edge{length}", "password": "Zq7#" * 40, "display_name": "Edge"}
        body["password"] = body["password"][:length]
        response = api.post("/api/v1/auth/register/", body, format="json")
        assert response.status_code == status, (length, response.content)
        if status == 400:
            assert "password" in response.json()["errors"]


@uses_db
def test_a_replay_sends_the_documented_header(schema_doc: SchemaDoc, student: Any) -> None:
    header = _operation(schema_doc, "POST", LESSON)["responses"]["201"]["headers"]["Idempotent-Replayed"]
    first = student.post("/api/v1/lessons/algebra-1/complete/", {}, HTTP_IDEMPOTENCY_KEY="replay-1")
    again = student.post("/api/v1/lessons/algebra-1/complete/", {}, HTTP_IDEMPOTENCY_KEY="replay-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] in header["schema"]["enum"]
    assert again.json() == first.json()

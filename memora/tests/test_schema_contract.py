"""The generated OpenAPI document against docs/CONTRACT.md (a verbatim copy of the shared contract).

Every example body of the contract is parsed out of its section and every field in it must exist
in the schema of the matching operation, with a compatible type. The sections are tied to
operations by ``CONTRACT_SECTIONS`` below: an issue that builds an endpoint drops the ``pending``
reason of its entry (or adds an entry for a new section), nothing else. A section whose operation
is not in the schema yet is skipped while its entry is pending and fails once it is not.

How a section is read: its fenced ``json`` blocks hold one or more JSON values. A value with
``code`` and ``detail`` is an error body (its status is the number in the text line just before
the block, e.g. "Third device — 403:"); of the other values, the first is the request body when
the operation takes one and the section has two, the rest are answers with the entry's status.
A key ``"..."`` stands for "the other fields, as above" and is not a field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from core.openapi import UUID4_PATTERN

CONTRACT_PATH = Path(__file__).resolve().parents[2] / "docs" / "CONTRACT.md"
SCHEMA_URL = "/api/schema/?format=json"
ERROR_COMPONENT = "#/components/schemas/ErrorOutput"
BEYOND = "built by the beyond-the-plan issue"


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # the OpenAPI path template
    status: int


@dataclass(frozen=True)
class Section:
    """How one ``##`` section of the contract maps onto the OpenAPI document."""

    ops: tuple[Op, ...] = ()
    pending: str | None = None  # why the operation may still be missing from the schema
    errors_only: bool = False  # every value is an error body (the "Errors" section)
    outside_schema: str | None = None  # not an OpenAPI operation (probes), with where it is tested


def section(*ops: tuple[str, str, int], pending: str | None = None) -> Section:
    return Section(ops=tuple(Op(m, p, s) for m, p, s in ops), pending=pending)


# Section title (the heading before " — ") → the operations whose bodies it shows.
CONTRACT_SECTIONS: dict[str, Section] = {
    "Register": section(("POST", "/api/v1/auth/register/", 201)),
    "Login": section(("POST", "/api/v1/auth/login/", 200)),
    "Errors (every error)": Section(errors_only=True),
    "Logout": section(("POST", "/api/v1/auth/logout/", 204)),
    "Profile": section(("GET", "/api/v1/profile/", 200), ("PATCH", "/api/v1/profile/", 200)),
    "Session": section(("GET", "/api/v1/session/", 200)),
    "Devices": section(("GET", "/api/v1/devices/", 200)),
    "Remove a device": section(("DELETE", "/api/v1/devices/{device_id}/", 204)),
    "Wallet": section(("GET", "/api/v1/wallet/", 200)),
    "Lesson completed": section(("POST", "/api/v1/lessons/{lesson_id}/complete/", 201)),
    "Service award": section(("POST", "/api/v1/wallet/xp/", 201)),
    "Streak restore": section(("POST", "/api/v1/players/{player_id}/streak/restore/", 201)),
    "History": section(("GET", "/api/v1/wallet/history/", 200)),
    "Status": Section(outside_schema="a probe outside /api/, tested with the probes"),
    "Metrics": Section(outside_schema="Prometheus text outside /api/, tested with the metrics"),
}


# --- the contract --------------------------------------------------------------------------------


@dataclass
class Example:
    value: Any
    label: str  # the text line just before the block ("" if none)


@dataclass
class ContractSection:
    title: str
    heading: str
    examples: list[Example] = field(default_factory=list)


_FENCE = re.compile(r"^```json\s*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _json_values(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        value, position = decoder.raw_decode(text, position)
        yield value


def parse_contract(text: str) -> dict[str, ContractSection]:
    sections: dict[str, ContractSection] = {}
    parts = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    for part in parts:
        heading, _, body = part.partition("\n")
        title = heading.split(" — ")[0].strip()
        current = ContractSection(title=title, heading=heading.strip())
        for match in _FENCE.finditer(body):
            before = body[: match.start()].rstrip().splitlines()
            label = before[-1].strip() if before and not before[-1].startswith("```") else ""
            current.examples += [Example(value, label) for value in _json_values(match.group(1))]
        sections[title] = current
    return sections


def is_error_body(value: Any) -> bool:
    return isinstance(value, dict) and "code" in value and "detail" in value


def label_status(label: str) -> int | None:
    found = re.findall(r"\b([1-5]\d\d)\b", label)
    return int(found[-1]) if found else None


# --- the schema ----------------------------------------------------------------------------------


class SchemaDoc:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            seen += 1
            assert seen < 20, f"reference loop at {schema['$ref']}"
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def operation(self, op: Op) -> dict[str, Any] | None:
        return self.document["paths"].get(op.path, {}).get(op.method.lower())

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for path, item in self.document["paths"].items():
            for method, operation in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    yield method.upper(), path, operation

    def json_schema(self, container: dict[str, Any]) -> dict[str, Any] | None:
        content = self.resolve(container).get("content", {})
        media = content.get("application/json")
        return None if media is None else media["schema"]


def type_mismatches(doc: SchemaDoc, value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every way ``value`` (a contract example) disagrees with ``schema`` in field names and types."""
    schema = doc.resolve(schema)
    for combiner in ("oneOf", "anyOf"):
        if combiner in schema:
            if value is None and schema.get("nullable"):
                return []
            options = [type_mismatches(doc, value, option, where) for option in schema[combiner]]
            return [] if any(not problems for problems in options) else [p for ps in options for p in ps]
    if "allOf" in schema:
        if value is None and schema.get("nullable"):
            return []
        return [p for part in schema["allOf"] for p in type_mismatches(doc, value, part, where)]

    declared = schema.get("type")
    types = set(declared) if isinstance(declared, list) else {declared} if declared else set()
    if value is None:
        return [] if schema.get("nullable") or "null" in types or not types else [f"{where}: null, schema {declared}"]
    actual = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}[
        type(value)
    ]
    if types and actual not in types and not (actual == "integer" and "number" in types):
        return [f"{where}: {actual} in the contract, {sorted(types)} in the schema"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", False)
        for key, item in value.items():
            if key == "...":
                continue
            if key in properties:
                problems += type_mismatches(doc, item, properties[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                problems += type_mismatches(doc, item, extra, f"{where}.{key}")
            elif extra is not True:
                problems.append(f"{where}.{key}: not in the schema")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += type_mismatches(doc, item, schema["items"], f"{where}[{index}]")
    return problems


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_doc() -> SchemaDoc:
    response = Client().get(SCHEMA_URL)
    assert response.status_code == 200, response.content[:500]
    return SchemaDoc(json.loads(response.content))


@pytest.fixture(scope="module")
def contract() -> dict[str, ContractSection]:
    return parse_contract(CONTRACT_PATH.read_text(encoding="utf-8"))


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


# --- the contract against the schema -------------------------------------------------------------


def test_every_contract_section_is_mapped(contract: dict[str, ContractSection]) -> None:
    assert set(contract) == set(CONTRACT_SECTIONS), "map each contract section in CONTRACT_SECTIONS"


def test_the_parser_finds_the_examples(contract: dict[str, ContractSection]) -> None:
    # Guards the parser itself: if the page's layout changes, these counts change with it.
    assert len(contract["Register"].examples) == 2
    assert [label_status(e.label) for e in contract["Login"].examples if is_error_body(e.value)] == [403]
    assert len(contract["Errors (every error)"].examples) == 6
    assert contract["Logout"].examples == []


@pytest.mark.parametrize("title", [t for t, s in CONTRACT_SECTIONS.items() if s.ops])
def test_contract_examples_match_the_schema(
    title: str, schema_doc: SchemaDoc, contract: dict[str, ContractSection]
) -> None:
    entry = CONTRACT_SECTIONS[title]
    found = contract[title]
    for op in entry.ops:
        operation = schema_doc.operation(op)
        if operation is None:
            if entry.pending:
                pytest.skip(f"{op.method} {op.path} is not built yet: {entry.pending}")
            pytest.fail(f"{op.method} {op.path} is missing from the schema")
        # The heading names the same method and path as the mapping (concrete ids allowed).
        heading_paths = [
            p.split("?")[0] for p in re.findall(r"`(?:GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)", found.heading)
        ]
        assert any(_template_regex(op.path).match(p) for p in heading_paths), (found.heading, op.path)

        responses = operation["responses"]
        assert str(op.status) in responses, f"{op.method} {op.path} does not document {op.status}"
        success_schema = schema_doc.json_schema(responses[str(op.status)])

        plain = [e for e in found.examples if not is_error_body(e.value)]
        request_body = operation.get("requestBody")
        if request_body is not None and len(plain) >= 2:
            request_schema = schema_doc.json_schema(request_body)
            assert request_schema is not None
            problems = type_mismatches(schema_doc, plain[0].value, request_schema, "request")
            assert not problems, f"{title} request: {problems}"
            plain = plain[1:]

        if op.status == 204:
            assert success_schema is None, f"{op.method} {op.path}: 204 has no body"
            assert not plain, f"{title}: a 204 section shows a body"
        for example in plain:
            assert success_schema is not None, f"{op.method} {op.path} {op.status} documents no JSON body"
            problems = type_mismatches(schema_doc, example.value, success_schema, "response")
            assert not problems, f"{title} {op.method} {op.status}: {problems}"

        for example in (e for e in found.examples if is_error_body(e.value)):
            status = label_status(example.label)
            assert status is not None, f"{title}: say the status before the error example"
            assert str(status) in responses, f"{op.method} {op.path} does not document {status}"
            error_schema = schema_doc.json_schema(responses[str(status)])
            assert error_schema == {"$ref": ERROR_COMPONENT}
            problems = type_mismatches(schema_doc, example.value, error_schema, "error")
            assert not problems, f"{title} {status}: {problems}"


def test_error_examples_match_the_error_body(schema_doc: SchemaDoc, contract: dict[str, ContractSection]) -> None:
    examples = [e.value for title, s in CONTRACT_SECTIONS.items() if s.errors_only for e in contract[title].examples]
    examples += [e.value for s in contract.values() for e in s.examples if is_error_body(e.value)]
    assert len(examples) >= 7
    for example in examples:
        assert is_error_body(example), example
        problems = type_mismatches(schema_doc, example, {"$ref": ERROR_COMPONENT}, example["code"])
        assert not problems, problems
    error = schema_doc.resolve({"$ref": ERROR_COMPONENT})
    assert set(error["required"]) == {"code", "detail"}


def test_a_type_mismatch_is_caught(schema_doc: SchemaDoc) -> None:
    # The checker itself: a wrong type, an unknown field and a nested wrong type are all reported.
    wrong = {"code": 1, "detail": "x", "colour": "red", "devices": [{"device_id": "a", "last_seen_at": 5}]}
    problems = type_mismatches(schema_doc, wrong, {"$ref": ERROR_COMPONENT})
    assert any("$.code" in p for p in problems)
    assert any("$.colour" in p for p in problems)
    assert any("$.devices[0].last_seen_at" in p for p in problems)


# --- the document itself -------------------------------------------------------------------------


def test_security_schemes(schema_doc: SchemaDoc) -> None:
    schemes = schema_doc.document["components"]["securitySchemes"]
    assert schemes["deviceSession"] == {**schemes["deviceSession"], "type": "http", "scheme": "bearer"}
    assert schemes["serviceKey"] == {**schemes["serviceKey"], "type": "apiKey", "in": "header", "name": "Authorization"}


def _student_operations(doc: SchemaDoc) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for method, path, op in doc.operations()
        if any("deviceSession" in requirement for requirement in op.get("security", []))
    ]


def test_every_student_operation_needs_the_device_header(schema_doc: SchemaDoc) -> None:
    students = _student_operations(schema_doc)
    assert {(m, p) for m, p, _ in students} >= {
        ("POST", "/api/v1/auth/logout/"),
        ("GET", "/api/v1/session/"),
        ("GET", "/api/v1/profile/"),
        ("PATCH", "/api/v1/profile/"),
        ("GET", "/api/v1/devices/"),
        ("DELETE", "/api/v1/devices/{device_id}/"),
    }
    login = schema_doc.operation(Op("POST", "/api/v1/auth/login/", 200))
    assert login is not None
    for method, path, operation in [*students, ("POST", "/api/v1/auth/login/", login)]:
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "X-Device-ID" in headers, (method, path)
        assert headers["X-Device-ID"]["required"] is True, (method, path)
        # A string with the UUID v4 pattern, not format: uuid (test_schema_bounds.py says why).
        assert headers["X-Device-ID"]["schema"]["pattern"] == UUID4_PATTERN
        assert "format" not in headers["X-Device-ID"]["schema"]


def test_student_operations_accept_only_the_device_session(schema_doc: SchemaDoc) -> None:
    for method, path, operation in _student_operations(schema_doc):
        assert operation["security"] == [{"deviceSession": []}], (method, path)
        for status in ("400", "401", "403", "503"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": ERROR_COMPONENT
            }, (method, path, status)


def test_service_operations_accept_only_a_service_key(schema_doc: SchemaDoc) -> None:
    for method, path, operation in schema_doc.operations():
        if not any("serviceKey" in requirement for requirement in operation.get("security", [])):
            continue
        assert operation["security"] == [{"serviceKey": []}], (method, path)
        assert "X-Device-ID" not in {p["name"] for p in operation.get("parameters", [])}, (method, path)
        assert {"400", "401", "403", "429", "503"} <= set(operation["responses"]), (method, path)


def test_register_and_login_are_anonymous(schema_doc: SchemaDoc) -> None:
    for path in ("/api/v1/auth/register/", "/api/v1/auth/login/"):
        operation = schema_doc.document["paths"][path]["post"]
        assert not any(operation.get("security", [{}])), path
        assert {"400", "403", "413", "415", "429", "503"} <= set(operation["responses"]), path
    login = schema_doc.document["paths"]["/api/v1/auth/login/"]["post"]
    assert "401" in login["responses"]


def test_every_error_answer_has_the_error_body_and_retry_after(schema_doc: SchemaDoc) -> None:
    for method, path, operation in schema_doc.operations():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            assert schema_doc.json_schema(response) == {"$ref": ERROR_COMPONENT}, (method, path, status)
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"] is True, (method, path, status)


def test_every_operation_with_a_body_documents_size_and_media_type(schema_doc: SchemaDoc) -> None:
    for method, path, operation in schema_doc.operations():
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(operation["responses"]), (method, path)


def test_idempotent_writes_document_their_header_and_conflicts(schema_doc: SchemaDoc) -> None:
    """The three writes that take an Idempotency-Key (and only they) require it, and document the
    replay header and the 409 / 422 answers."""
    keyed = set()
    for method, path, operation in schema_doc.operations():
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        if "Idempotency-Key" in headers:
            keyed.add(operation["operationId"])
            assert headers["Idempotency-Key"]["required"] is True, (method, path)
            assert {"400", "409", "422"} <= set(operation["responses"]), (method, path)
            replayed = schema_doc.resolve(operation["responses"]["201"]).get("headers", {})
            assert replayed["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}, (method, path)
        else:
            # A write without the key has no replay to announce.
            for status, response in operation["responses"].items():
                assert "Idempotent-Replayed" not in schema_doc.resolve(response).get("headers", {}), (path, status)
    assert keyed == {"lesson_complete", "wallet_award_xp", "streak_restore"}


def test_operation_ids_are_unique(schema_doc: SchemaDoc) -> None:
    ids = [operation["operationId"] for _, _, operation in schema_doc.operations()]
    assert len(ids) == len(set(ids))


def test_schema_is_served_as_yaml_too() -> None:
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


# --- Swagger UI ----------------------------------------------------------------------------------


def test_docs_serve_swagger_ui_from_local_static_files() -> None:
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "SwaggerUIBundle" in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "an asset from another host"
    assert "https://" not in html and "http://" not in html
    assets = re.findall(r"""(?:src|href)="([^"]+)\"""", html)
    local = [a for a in assets if "drf_spectacular_sidecar" in a]
    assert len(local) >= 3, assets  # bundle, standalone preset, stylesheet (and the favicon)
    for asset in local:
        relative = asset.split("/static/", 1)[1]
        assert finders.find(relative), f"{asset} is not among the static files"
    assert '"validatorUrl": null' in html  # no call to the public validator either

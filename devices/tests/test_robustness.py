"""No request, however malformed, gets a 500: odd bytes in headers, huge headers, null bytes and
surrogates in JSON strings, arrays instead of objects, odd lengths and methods, on every endpoint
of the identity half."""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

# Logout last: each test sends its odd request to every endpoint with a live session.
ENDPOINTS = [
    ("post", "/api/v1/auth/register/"),
    ("post", "/api/v1/auth/login/"),
    ("get", "/api/v1/session/"),
    ("get", "/api/v1/profile/"),
    ("patch", "/api/v1/profile/"),
    ("get", "/api/v1/devices/"),
    ("delete", "/api/v1/devices/{device_id}/"),
    ("post", "/api/v1/auth/logout/"),
]


def assert_clean_4xx(response, *allowed):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    if allowed:
        assert response.status_code in allowed, (response.status_code, response.content[:300])
    body = response.json()
    assert isinstance(body["code"], str)
    assert isinstance(body["detail"], str)
    return body


def send(student, method, path, body=b"{}", content_type="application/json", **headers):
    path = path.format(device_id=str(uuid.uuid4()))
    meta = {**student.headers(), **headers}
    meta = {k: v for k, v in meta.items() if v is not None}
    return student.client.generic(method.upper(), path, body, content_type=content_type, **meta)


def each_endpoint(student, **kwargs):
    """(method, path, response) for every endpoint, the same odd request each time."""
    for method, path in ENDPOINTS:
        yield method, path, send(student, method, path, **kwargs)


ODD_HEADERS = [
    {"HTTP_X_DEVICE_ID": "\xff\xfe\x00"},
    {"HTTP_X_DEVICE_ID": "é" * 36},
    {"HTTP_X_DEVICE_ID": str(uuid.uuid4()) + "\x00"},
    {"HTTP_AUTHORIZATION": "Bearer \x00\xff"},
    {"HTTP_AUTHORIZATION": "Bearer mem_1_" + "é" * 43},
    {"HTTP_AUTHORIZATION": "Bearer mem_999999999999999999_" + "A" * 43},
    {"HTTP_AUTHORIZATION": "Bearer mem_0_" + "A" * 43},
    {"HTTP_AUTHORIZATION": "Bearer"},
    {"HTTP_AUTHORIZATION": "bearer x"},
    {"HTTP_AUTHORIZATION": "Basic YWRtaW46YWRtaW4="},
    {"HTTP_AUTHORIZATION": "Api-Key"},
    {"HTTP_AUTHORIZATION": "Api-Key \xff\x00"},
    {"HTTP_AUTHORIZATION": None},
    {"HTTP_X_FORWARDED_FOR": "\xff, \x00, 1.2.3.4"},
    {"REMOTE_ADDR": "not an address"},
    {"CONTENT_LENGTH": "abc"},
    {"CONTENT_LENGTH": "-1"},
    {"CONTENT_LENGTH": "1"},
    {"CONTENT_LENGTH": "0"},
    {"HTTP_ACCEPT": "text/html"},
]


@pytest.mark.parametrize("headers", ODD_HEADERS, ids=range(len(ODD_HEADERS)))
def test_odd_headers(student, headers):
    for method, path, response in each_endpoint(student, **headers):
        assert response.status_code < 500, (method, path, response.content[:300])
        if response.status_code >= 400:
            assert_clean_4xx(response)


HUGE = "A" * 5000


@pytest.mark.parametrize(
    "header", ["HTTP_AUTHORIZATION", "HTTP_X_DEVICE_ID", "HTTP_X_FORWARDED_FOR", "HTTP_IDEMPOTENCY_KEY"]
)
def test_huge_headers_are_refused(student, header):
    value = "Bearer " + HUGE if header == "HTTP_AUTHORIZATION" else HUGE
    for _method, _path, response in each_endpoint(student, **{header: value}):
        body = assert_clean_4xx(response, 400)
        assert body["code"] == "validation_error"
    assert student.get("/api/v1/session/").status_code == 200


def test_a_header_at_the_bound_is_read(student):
    for method, path, response in each_endpoint(student, HTTP_X_FORWARDED_FOR="1" * 4096):
        assert response.status_code < 500, (method, path)


BODIES = [
    b"[]",
    b'[{"username": "a"}]',
    b'"string"',
    b"null",
    b"1e400",
    b'{"username": "a\\u0000b", "password": "p\\u0000w", "display_name": "d\\u0000", "timezone": "U\\u0000TC"}',
    b'{"username": "\\ud800", "password": "\\udfff pass phrase", "display_name": "\\ud83d", "timezone": "\\ud800"}',
    b'{"username": ["a"], "password": {"x": 1}, "display_name": [], "timezone": [], "device_name": {}}',
    b'{"username": "amira", "password": "correct horse battery", "device_name": null, "platform": null}',
    b'{"username": "amira", "password": "correct horse battery", "replace_device_id": '
    b"340282366920938463463374607431768211457}",
    b'{"username": "amira", "password": "correct horse battery", "replace_device_id": -1}',
    b'{"username": 1' + b"0" * 5000 + b"}",
    b'{"display_name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"a": ' * 3000 + b"1" + b"}" * 3000,
    b"\xef\xbb\xbf{}",
    b"\x00\x01\x02",
    b"{" + b'"k": 1,' * 5000 + b'"z": 2}',
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_odd_json_bodies(student, body):
    for method, path, response in each_endpoint(student, body=body):
        assert response.status_code < 500, (method, path, response.content[:300])
        if response.status_code >= 400:
            assert_clean_4xx(response)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "application/json; charset=rot13"])
def test_odd_content_types(student, content_type):
    for method, path, response in each_endpoint(student, body=b'{"a": 1}', content_type=content_type):
        assert response.status_code < 500, (method, path, response.content[:300])


def test_a_declared_length_over_64_kib_is_refused_before_reading(student):
    for _method, _path, response in each_endpoint(student, body=b"{}", CONTENT_LENGTH=str(10**12)):
        assert_clean_4xx(response, 413)


@pytest.mark.parametrize("other", ["put", "options", "trace", "head", "post", "get", "delete", "patch"])
def test_other_methods(student, other):
    for method, path in ENDPOINTS:
        if other == method:
            continue
        response = send(student, other, path)
        assert response.status_code < 500, (other, path, response.content[:300])
        if response.status_code >= 400 and other != "head":
            assert_clean_4xx(response)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope/",
        "/api/v1/devices/a/b/",
        "/api/v1/devices/%F0%9F%98%80/",
        "/api/v1/devices/%00/",
        "/api/v2/session/",
        "/api/v1/session",
        "/api/",
    ],
)
def test_unknown_api_urls_answer_json(student, path):
    response = student.get(path)
    assert response.status_code < 500
    if response.status_code == 404:
        assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_after_all_that_the_session_still_works(student):
    for headers in ODD_HEADERS:
        send(student, "get", "/api/v1/session/", **headers)
    assert student.get("/api/v1/session/").status_code == 200


def test_a_login_with_odd_strings_does_not_fail(api):
    for username, password in [("\ud800", "x"), ("a" * 150, "\udfff"), ("amira", "é" * 128), ("\x7f", "\t")]:
        response = api.post(
            "/api/v1/auth/login/",
            json.dumps({"username": username, "password": password}),
            content_type="application/json",
            HTTP_X_DEVICE_ID=str(uuid.uuid4()),
        )
        assert_clean_4xx(response, 400, 401)


def test_a_post_to_an_unknown_api_url_is_a_json_404_not_a_csrf_page():
    from rest_framework.test import APIClient

    api = APIClient(enforce_csrf_checks=True)  # as a real client meets the CSRF middleware
    response = api.post("/api/v1/players/null,null/streak/restore/", {"reason": "x"}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"

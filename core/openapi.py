"""Shared pieces of the OpenAPI document and the project's ``AutoSchema``.

The schema class adds what every operation of a kind answers, so that views declare only what is
particular to them:

* student operations (``DeviceSessionAuthentication`` without ``AllowAny``): the required
  ``X-Device-ID`` header, the ``deviceSession`` scheme only, and 400/401/403/503;
* service operations (``HasServiceScope`` with ``ServiceKeyAuthentication``): the ``serviceKey``
  scheme only, and 400/401/403/429/503 (every key is rate limited);
* student operations also 429: unknown credentials from one address answer 429 past a limit;
* every operation: 400 (a header over its bound, a malformed body), 405 (another method on its path,
  with ``Allow``) and 406 (an ``Accept`` that admits no JSON); with a request body also 413 and 415;
  with an ``Idempotency-Key`` header also 409 and 422;
* ``Retry-After`` on every 429 and 503.

This module imports no app: authentication and permission classes are recognised by their dotted
paths.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_parameter_type
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

DEVICE_SESSION_AUTH = "devices.authentication.DeviceSessionAuthentication"
SERVICE_KEY_AUTH = "devices.authentication.ServiceKeyAuthentication"
SERVICE_PERMISSION = "players.permissions.HasServiceScope"
ALLOW_ANY = "rest_framework.permissions.AllowAny"
# Names of the security schemes registered by devices/schema.py.
DEVICE_SESSION_SCHEME = "deviceSession"
SERVICE_KEY_SCHEME = "serviceKey"

# A UUID v4 in either case (the server lower-cases it). Headers and paths declare it as a string with
# this pattern, not ``format: uuid``: a generated client would type it ``UUID`` and put the object
# itself into a header, which an HTTP client refuses (and ``uuid`` admits any version).
UUID4_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"


class ErrorDeviceOutput(serializers.Serializer):
    device_id = serializers.CharField()
    name = serializers.CharField()
    platform = serializers.CharField()
    last_seen_at = serializers.DateTimeField()


class ErrorOutput(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code.")
    detail = serializers.CharField(help_text="Human-readable message.")
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="validation_error only: messages per field.",
    )
    reason = serializers.CharField(
        required=False,
        help_text="session_ended (logout, password_changed, deactivated, ended_by_support) "
        "and session_expired (idle, lifetime).",
    )
    next_allowed_at = serializers.DateTimeField(
        required=False, help_text="device_removal_cooldown and timezone_change_cooldown."
    )
    retry_after = serializers.IntegerField(required=False, help_text="rate_limited: seconds, as in Retry-After.")
    devices = ErrorDeviceOutput(many=True, required=False, help_text="device_limit_reached: the authorized devices.")


_DESCRIPTIONS = {
    400: "validation_error, invalid_device_id, idempotency_key_missing, idempotency_key_invalid",
    401: "not_authenticated, invalid_credentials, session_replaced, session_ended, session_expired, device_revoked",
    403: "device_mismatch, device_revoked, device_limit_reached, device_removal_cooldown, permission_denied, "
    "registration_closed, timezone_change_cooldown",
    404: "not_found",
    405: "method_not_allowed (with Allow)",
    406: "not_acceptable",
    409: "idempotency_in_progress",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "idempotency_key_reused",
    429: "rate_limited (with Retry-After)",
    503: "service_unavailable (with Retry-After)",
}


def error_responses(*statuses: int, describe: dict[int, str] | None = None) -> dict[int, Any]:
    """``responses=`` entries with the error body for the statuses particular to one view;
    ``describe`` names the codes this view can answer when they are fewer than the status's list."""
    describe = describe or {}
    return {
        s: OpenApiResponse(ErrorOutput, description=describe.get(s) or _DESCRIPTIONS.get(s, "error")) for s in statuses
    }


DEVICE_ID_HEADER = OpenApiParameter(
    "X-Device-ID",
    str,
    OpenApiParameter.HEADER,
    required=True,
    pattern=UUID4_PATTERN,
    description="The device's UUID v4, chosen by the app at install time. It identifies the device; "
    "it does not authenticate it.",
)

DEVICE_PROOF_HEADER = OpenApiParameter(
    "X-Device-Proof",
    str,
    OpenApiParameter.HEADER,
    required=False,
    pattern=r"^dp_[A-Za-z0-9_-]{43,86}$",
    description="The device_proof that the last login of this device returned. With it, this login is held only "
    "to this device's own lockout counter; without it (or with a stale one) the login is a new device's.",
)

IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    pattern=r"^[\x20-\x7E]{1,255}$",
    description="1 to 255 printable ASCII characters, unique per intended write. A retry with the same key "
    "and body replays the first answer; another body under the same key is 422.",
)

_RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    response=[429, 503],
    required=True,
    description="Seconds to wait before trying again.",
)


_ALLOW_HEADER = OpenApiParameter(
    "Allow",
    str,
    OpenApiParameter.HEADER,
    response=[405],
    required=True,
    description="The methods this path takes.",
)


def idempotency_parameters(*, replay_statuses: tuple[int, ...] = (201,)) -> list[OpenApiParameter]:
    """``parameters=`` for a write that needs an ``Idempotency-Key``: the request header and the
    ``Idempotent-Replayed`` header of a replayed answer. 409 and 422 are then added automatically."""
    return [
        IDEMPOTENCY_KEY_HEADER,
        OpenApiParameter(
            "Idempotent-Replayed",
            str,
            OpenApiParameter.HEADER,
            response=list(replay_statuses),
            enum=["true"],
            description="Present on a replay: the stored first answer, nothing changed.",
        ),
    ]


def _canonical_parameter(parameter: OpenApiParameter) -> dict[str, Any]:
    schema = dict(parameter.type) if isinstance(parameter.type, dict) else {"type": "string"}
    return build_parameter_type(
        name=parameter.name,
        schema=schema,
        location=parameter.location,
        required=parameter.required,
        description=parameter.description,
        pattern=parameter.pattern,
    )


def _class_paths(obj: object) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(obj).__mro__}


def _status_of(key: Any) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


class MemoraAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the headers, schemes and errors each kind of caller gets.

    ``@extend_schema`` wraps this class and replaces the public getters outright (responses, auth)
    or appends to them (parameters), so the additions hook in where the operation is assembled.
    """

    def audience(self) -> str:
        """``student``, ``service`` or ``anonymous``: who may call this operation."""
        authenticators: set[str] = set()
        for authenticator in self.view.get_authenticators():
            authenticators |= _class_paths(authenticator)
        permissions: set[str] = set()
        for permission in self.view.get_permissions():
            permissions |= _class_paths(permission)
        if SERVICE_PERMISSION in permissions and SERVICE_KEY_AUTH in authenticators:
            return "service"
        if DEVICE_SESSION_AUTH in authenticators and ALLOW_ANY not in permissions:
            return "student"
        return "anonymous"

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if self.audience() == "student":
            parameters.insert(0, DEVICE_ID_HEADER)
        parameters += [_RETRY_AFTER_HEADER, _ALLOW_HEADER]
        return parameters

    def _process_override_parameters(self, direction: str = "request") -> dict[tuple[str, str], Any]:
        # A header the whole API shares has one definition: it replaces a view's own copy of it.
        result = super()._process_override_parameters(direction)
        for canonical in (DEVICE_ID_HEADER, IDEMPOTENCY_KEY_HEADER):
            key = (canonical.name, canonical.location)
            if result.get(key) is not None:
                result[key] = _canonical_parameter(canonical)
        return result

    def get_auth(self) -> list[dict[str, Any]]:
        auths = super().get_auth()
        keep = {"student": DEVICE_SESSION_SCHEME, "service": SERVICE_KEY_SCHEME}.get(self.audience())
        if keep is None:
            return auths
        # Every view accepts both authenticators, but its permission admits only one kind of caller.
        return [requirement for requirement in auths if not requirement or keep in requirement]

    def _takes_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None

    def _is_idempotent_write(self) -> bool:
        return any(
            isinstance(p, OpenApiParameter) and p.name == "Idempotency-Key" and not p.response
            for p in self.get_override_parameters()
        )

    def implied_errors(self) -> dict[int, str]:
        """The error statuses every operation of this kind can answer, with their codes."""
        audience = self.audience()
        idempotent = self._is_idempotent_write()
        codes: dict[int, list[str]] = {
            400: ["validation_error"],
            405: ["method_not_allowed: another method on this path (with Allow)"],
            406: ["not_acceptable: the Accept header admits no application/json"],
        }
        if audience == "student":
            codes[400].append("invalid_device_id")
            codes[401] = ["not_authenticated", "session_replaced", "session_ended", "session_expired", "device_revoked"]
            codes[403] = ["device_mismatch", "permission_denied"]
            codes[429] = ["rate_limited: too many unknown credentials from this address (with Retry-After)"]
            codes[503] = ["service_unavailable (with Retry-After)"]
        elif audience == "service":
            codes[401] = ["not_authenticated"]
            codes[403] = ["permission_denied (a missing scope)"]
            codes[429] = ["rate_limited: calls per key (with Retry-After)"]
            codes[503] = ["service_unavailable (with Retry-After)"]
        if self._takes_body():
            codes[413] = ["payload_too_large"]
            codes[415] = ["unsupported_media_type"]
        if idempotent:
            codes[400] += ["idempotency_key_missing", "idempotency_key_invalid"]
            codes[409] = ["idempotency_in_progress"]
            codes[422] = ["idempotency_key_reused"]
        return {status: ", ".join(names) for status, names in sorted(codes.items())}

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        bodies = dict(super()._get_response_bodies(direction))
        implied = self.implied_errors()
        for status, response in error_responses(*implied, describe=implied).items():
            if str(status) not in bodies:
                bodies[str(status)] = self._get_response_for_code(response, str(status), direction=direction)
        return dict(sorted(bodies.items()))

    def _is_list_view(self, serializer: Any = None) -> bool:
        # The API answers lists inside an envelope ({"results": [...]}) unless a paginator builds
        # it; only then is the response documented as a list, never because the action is `list`.
        if getattr(self.view, "pagination_class", None) is not None:
            return bool(super()._is_list_view(serializer))
        if serializer is None:
            serializer = self.get_response_serializers()
        if isinstance(serializer, dict) and serializer:
            by_status = {_status_of(code): s for code, s in serializer.items()}
            serializer = by_status[min(by_status)]
        if isinstance(serializer, OpenApiResponse):
            serializer = serializer.response
        return isinstance(serializer, serializers.ListSerializer)

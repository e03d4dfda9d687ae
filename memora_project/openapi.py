"""Shared pieces of the OpenAPI document: the error body and per-status error responses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorOutput(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code.")
    detail = serializers.CharField(help_text="Human-readable message.")
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False, help_text="validation_error only."
    )
    reason = serializers.CharField(required=False, help_text="session_ended and session_expired.")
    next_allowed_at = serializers.DateTimeField(required=False)
    retry_after = serializers.IntegerField(required=False)
    devices = serializers.ListField(child=serializers.DictField(), required=False, help_text="device_limit_reached.")


_DESCRIPTIONS = {
    400: "validation_error, invalid_device_id, idempotency_key_missing, idempotency_key_invalid",
    401: "not_authenticated, invalid_credentials, session_replaced, session_ended, session_expired, device_revoked",
    403: "device_mismatch, device_revoked, device_limit_reached, device_removal_cooldown, permission_denied, "
    "registration_closed, timezone_change_cooldown",
    404: "not_found",
    405: "method_not_allowed",
    409: "idempotency_in_progress",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "idempotency_key_reused",
    429: "rate_limited (with Retry-After)",
    503: "service_unavailable (with Retry-After)",
}


def error_responses(*statuses: int) -> dict[int, Any]:
    return {s: OpenApiResponse(ErrorOutput, description=_DESCRIPTIONS.get(s, "error")) for s in statuses}

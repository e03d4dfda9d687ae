"""The one application error type and the DRF exception handler that renders every error.

Every error body is ``{"code", "detail"}`` plus the fields named by the design.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from core import metrics


class ApiError(Exception):
    """An answer the API gives on purpose: a stable ``code``, a status and optional extra fields."""

    metric_scope: str | None = None

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int,
        retry_after: int | float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))
        self.extra = extra

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "detail": self.detail}
        data.update(self.extra)
        if self.retry_after is not None and self.code == "rate_limited":
            data["retry_after"] = self.retry_after
        return data

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def validation_error(errors: dict[str, list[str]]) -> ApiError:
    return ApiError("validation_error", "Some fields are invalid.", status=400, errors=errors)


def not_authenticated() -> ApiError:
    return ApiError("not_authenticated", "Authentication credentials were not provided or are invalid.", status=401)


def service_unavailable(retry_after: int = 5) -> ApiError:
    return ApiError(
        "service_unavailable",
        "The service is temporarily unavailable. Please try again shortly.",
        status=503,
        retry_after=retry_after,
    )


def rate_limited(retry_after: float, *, scope: str = "other") -> ApiError:
    """429 with Retry-After; ``scope`` names the limit for /metrics and never reaches the body."""
    error = ApiError("rate_limited", "Too many attempts. Try again later.", status=429, retry_after=retry_after)
    error.metric_scope = scope
    return error


def _flatten(detail: Any) -> dict[str, list[str]]:
    """DRF validation details as ``{field: [messages]}``; nested errors joined with dots."""
    out: dict[str, list[str]] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value):
                out.setdefault(prefix or "non_field_errors", []).extend(str(v) for v in value)
            else:
                for index, sub in enumerate(value):
                    walk(f"{prefix}.{index}" if prefix else str(index), sub)
        else:
            out.setdefault(prefix or "non_field_errors", []).append(str(value))

    walk("", detail)
    return out


def api_error_for(exc: Exception) -> ApiError | None:
    """Map any exception that has a defined answer onto an ``ApiError``; ``None`` for a real bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, drf_exceptions.ValidationError):
        return validation_error(_flatten(exc.detail))
    if isinstance(exc, drf_exceptions.ParseError):
        return ApiError(
            "validation_error", "The body is not valid JSON.", status=400, errors={"body": [str(exc.detail)]}
        )
    if isinstance(exc, RecursionError):
        # DRF's JSON parser lets the decoder's RecursionError through (64 KiB of "[" is enough);
        # nothing else in a request recurses on client input.
        return ApiError(
            "validation_error", "The body is not valid JSON.", status=400, errors={"body": ["Nested too deeply."]}
        )
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        return not_authenticated()
    if isinstance(exc, (drf_exceptions.PermissionDenied, DjangoPermissionDenied)):
        return ApiError("permission_denied", "You do not have permission to do this.", status=403)
    if isinstance(exc, (drf_exceptions.NotFound, Http404)):
        return ApiError("not_found", "Not found.", status=404)
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return ApiError("method_not_allowed", str(exc.detail), status=405)
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return ApiError("unsupported_media_type", "Send the body as application/json.", status=415)
    if isinstance(exc, drf_exceptions.NotAcceptable):
        return ApiError("not_acceptable", "This API answers in JSON only.", status=406)
    if isinstance(exc, RequestDataTooBig):
        return payload_too_large()
    if isinstance(exc, drf_exceptions.Throttled):
        return rate_limited(getattr(exc, "wait", None) or 1)
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable (or went away mid-request): the client retries later.
        return service_unavailable()
    if isinstance(exc, drf_exceptions.APIException):
        return ApiError(str(exc.default_code), str(exc.detail), status=exc.status_code)
    return None


def payload_too_large() -> ApiError:
    return ApiError("payload_too_large", "The body is larger than 64 KiB.", status=413)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    error = api_error_for(exc)
    if error is None:
        return None
    if error.metric_scope is not None:
        metrics.RATE_LIMITED.labels(scope=error.metric_scope).inc()
    return Response(error.body(), status=error.status, headers=error.headers())


def json_error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.headers().items():
        response[name] = value
    return response

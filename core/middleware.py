"""Guards in front of every API request: body and header sizes, before any parsing."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.errors import ApiError, json_error_response, payload_too_large

_BOUNDED_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_X_DEVICE_ID", "HTTP_IDEMPOTENCY_KEY", "HTTP_X_FORWARDED_FOR")


class ApiGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > settings.MEMORA_MAX_BODY_BYTES:
                return json_error_response(payload_too_large())
            for header in _BOUNDED_HEADERS:
                if len(str(request.META.get(header, ""))) > settings.MEMORA_MAX_HEADER_BYTES:
                    name = header.removeprefix("HTTP_").replace("_", "-").title()
                    return json_error_response(
                        ApiError(
                            "validation_error",
                            "A header is too long.",
                            status=400,
                            errors={name: [f"At most {settings.MEMORA_MAX_HEADER_BYTES} bytes."]},
                        )
                    )
        return self.get_response(request)

"""Runs the device + session check once for every student API request (not register or login).

The outcome waits on the request for ``DeviceSessionAuthentication``, so that errors leave
through DRF's one exception handler and the schema shows the security scheme.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from core import metrics
from core.errors import api_error_for
from devices import verification
from devices.authentication import DeviceSessionAuthentication


def uses_device_session(view_func: Any) -> bool:
    cls = getattr(view_func, "cls", None)
    if getattr(cls, "service_only", False):
        # Only service keys may call it: no device step, 401 without a key (statement 15).
        return False
    classes = getattr(cls, "authentication_classes", None) or []
    return DeviceSessionAuthentication in classes


class DeviceSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        if not request.path.startswith("/api/v1/") or not uses_device_session(view_func):
            return None
        authorization = request.META.get("HTTP_AUTHORIZATION")
        if authorization and authorization.startswith("Api-Key "):
            return None  # a service key skips the device steps
        started = time.perf_counter()
        try:
            request.memora_principal = verification.verify(  # type: ignore[attr-defined]
                authorization=authorization, device_header=request.META.get("HTTP_X_DEVICE_ID")
            )
        except Exception as exc:
            # A cold cache with the database down raises OperationalError here, outside DRF's
            # handler: hand every error with a defined answer (503 for that one) to the view.
            error = api_error_for(exc)
            if error is None:
                raise
            if error.code == "not_authenticated" and authorization:
                error = verification.unknown_credentials(request)
            request.memora_auth_error = error  # type: ignore[attr-defined]
        finally:
            metrics.VERIFY_SECONDS.observe(time.perf_counter() - started)
        return None

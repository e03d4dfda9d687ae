"""DRF authentication classes: the student's device-bound session and the service API key."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from devices import servicekeys, verification
from players.principals import PlayerPrincipal, ServicePrincipal


class DeviceSessionAuthentication(BaseAuthentication):
    """Reads the outcome of the check that ``DeviceSessionMiddleware`` ran for this request."""

    def authenticate(self, request: Request) -> tuple[PlayerPrincipal, str] | None:
        django_request: Any = request._request
        authorization = django_request.META.get("HTTP_AUTHORIZATION", "")
        if authorization.startswith("Api-Key "):
            return None
        view = (request.parser_context or {}).get("view")
        if getattr(view, "service_only", False):
            return None  # a route only service keys may call: 401 before any device step
        error = getattr(django_request, "memora_auth_error", None)
        if error is not None:
            raise error
        principal = getattr(django_request, "memora_principal", None)
        if principal is None:
            # Not seen by the middleware (a view called directly): run the check here.
            principal = verification.verify(
                authorization=authorization or None, device_header=django_request.META.get("HTTP_X_DEVICE_ID")
            )
        return principal, principal.token_digest

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="memora"'


class ServiceKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ServicePrincipal, None] | None:
        authorization = request._request.META.get("HTTP_AUTHORIZATION", "")
        if not authorization.startswith("Api-Key "):
            return None
        principal = servicekeys.service_key_verify(raw=authorization[8:].strip())
        if principal is None:
            raise verification.unknown_credentials(request._request)
        return principal, None

    def authenticate_header(self, request: Request) -> str:
        return 'Api-Key realm="memora"'

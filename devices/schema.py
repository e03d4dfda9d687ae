"""OpenAPI descriptions of the two security schemes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class DeviceSessionScheme(OpenApiAuthenticationExtension):
    target_class = "devices.authentication.DeviceSessionAuthentication"
    name = "deviceSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mem_<player_id>_<secret>",
            "description": "The token from login, always with the X-Device-ID header of the device it was issued to.",
        }


class ServiceKeyScheme(OpenApiAuthenticationExtension):
    target_class = "devices.authentication.ServiceKeyAuthentication"
    name = "serviceKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: a service key created in the admin, with scopes.",
        }

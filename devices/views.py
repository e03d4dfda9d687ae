from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from core.clientip import client_address
from core.errors import validation_error
from core.openapi import DEVICE_ID_HEADER, DEVICE_PROOF_HEADER, UUID4_PATTERN, error_responses
from devices import login, selectors, services, tokens
from devices.serializers import DeviceListOutput, DeviceOutput, LoginInput, LoginOutput, SessionOutput
from players.permissions import current_student
from players.serializers import player_summary
from players.views import json_object


class LoginViewSet(viewsets.ViewSet):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_login",
        summary="Log in on this device",
        description="Authorizes the device if a slot is free and ends the student's other sessions. "
        "The token is shown only in this answer.",
        request=LoginInput,
        parameters=[DEVICE_ID_HEADER, DEVICE_PROOF_HEADER],
        examples=[
            OpenApiExample(
                "Log in on a phone",
                value={
                    "username": "amira",
                    "password": "correct horse battery",
                    "device_name": "Amira's phone",
                    "platform": "android",
                },
                request_only=True,
            )
        ],
        responses={
            200: LoginOutput,
            **error_responses(
                400,
                401,
                403,
                429,
                503,
                describe={
                    400: "validation_error, invalid_device_id",
                    401: "invalid_credentials",
                    403: "device_revoked, device_limit_reached (with devices), device_removal_cooldown",
                    429: "rate_limited: too many attempts from this address or for this username (with Retry-After)",
                },
            ),
        },
        auth=[],
        tags=["auth"],
    )
    def create(self, request: Request) -> Response:
        result = login.login_attempt(
            body=json_object(request),
            device_header=request.META.get("HTTP_X_DEVICE_ID"),
            proof_header=request.META.get("HTTP_X_DEVICE_PROOF"),
            address=client_address(request._request),
        )
        device = result.device
        body_out = {
            "token": result.token,
            "device_proof": result.device_proof,
            "expires_at": result.session.expires_at,
            "idle_timeout_seconds": settings.MEMORA_SESSION_IDLE_TIMEOUT,
            "player": player_summary(result.profile),
            "device": {
                "device_id": str(device.device_id),
                "name": device.name,
                "platform": device.platform,
                "authorized_at": device.authorized_at,
                "last_seen_at": device.last_seen_at,
                "is_current": True,
            },
        }
        response = Response(LoginOutput(body_out).data)
        response["Cache-Control"] = "no-store"
        return response


class LogoutViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="auth_logout",
        summary="End this session",
        request=None,
        responses={204: None},
        tags=["auth"],
    )
    def create(self, request: Request) -> Response:
        services.session_end(session_id=current_student(request).session_id, reason="logout")
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="session_get",
        summary="This session",
        responses={200: SessionOutput},
        tags=["session"],
    )
    def retrieve(self, request: Request) -> Response:
        p = current_student(request)
        return Response(
            SessionOutput(
                {
                    "device": {"device_id": p.device_id, "name": p.device_name, "platform": p.platform},
                    "started_at": p.started_at,
                    "expires_at": p.expires_at,
                    "last_seen_at": p.last_seen_at,
                }
            ).data
        )


class DeviceViewSet(viewsets.ViewSet):
    lookup_field = "device_id"

    @extend_schema(
        operation_id="devices_list",
        summary="The authorized devices",
        responses={200: DeviceListOutput},
        tags=["devices"],
    )
    def list(self, request: Request) -> Response:
        p = current_student(request)
        devices = [
            {
                "device_id": str(d.device_id),
                "name": d.name,
                "platform": d.platform,
                "authorized_at": d.authorized_at,
                "last_seen_at": max(d.last_seen_at, p.last_seen_at)
                if str(d.device_id) == p.device_id
                else d.last_seen_at,
                "is_current": str(d.device_id) == p.device_id,
            }
            for d in selectors.device_list_active(player_id=p.player_id)
        ]
        allowed = selectors.removal_allowed_at(player_id=p.player_id, now=timezone.now())
        return Response(DeviceListOutput({"results": devices, "removal_allowed_at": allowed}).data)

    @extend_schema(
        operation_id="devices_remove",
        summary="Remove another device",
        description="At most once per cooldown, together with replacements at login. "
        "The current device cannot remove itself (sign out instead).",
        parameters=[
            OpenApiParameter(
                "device_id",
                str,
                OpenApiParameter.PATH,
                pattern=UUID4_PATTERN,
                description="The device_id of one of this student's devices.",
            )
        ],
        responses={
            204: None,
            **error_responses(
                403,
                404,
                describe={403: "device_mismatch, permission_denied (the current device), device_removal_cooldown"},
            ),
        },
        tags=["devices"],
    )
    def destroy(self, request: Request, device_id: str) -> Response:
        target = tokens.device_id_normalize(device_id)
        if target is None:
            raise validation_error({"device_id": ["Must be a UUID version 4."]})
        services.device_remove_by_student(
            player_id=current_student(request).player_id,
            device_id=target,
            current_device_id=current_student(request).device_id,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


__all__ = ["DeviceOutput", "DeviceViewSet", "LoginViewSet", "LogoutViewSet", "SessionViewSet"]

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from core import ratelimit
from core.clientip import client_ip
from core.errors import ApiError, rate_limited, validation_error
from core.openapi import error_responses
from players import selectors, services
from players.permissions import current_student
from players.serializers import ProfileOutput, ProfileUpdateInput, RegisterInput, RegisterOutput


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a validation error naming the body."""
    data = request.data
    if not isinstance(data, dict):
        raise validation_error({"body": ["Expected a JSON object."]})
    return data


class RegisterViewSet(viewsets.ViewSet):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_register",
        summary="Create a student account",
        request=RegisterInput,
        examples=[
            OpenApiExample(
                "A new student",
                value={
                    "username": "amira",
                    "password": "correct horse battery",
                    "display_name": "Amira",
                    "timezone": "Africa/Cairo",
                },
                request_only=True,
            )
        ],
        responses={
            201: RegisterOutput,
            **error_responses(
                400,
                403,
                429,
                503,
                describe={
                    400: "validation_error",
                    403: "registration_closed",
                    429: "rate_limited: too many registrations from this address (with Retry-After)",
                },
            ),
        },
        auth=[],
        tags=["auth"],
    )
    def create(self, request: Request) -> Response:
        body = json_object(request)
        if not settings.MEMORA_REGISTRATION_OPEN:
            # Closed is closed, whatever the body says (the service checks again, for other callers).
            raise ApiError("registration_closed", "Registration is closed.", status=403)
        limit, window = settings.MEMORA_RATE_REGISTER_IP
        verdict = ratelimit.hit("register_ip", client_ip(request), limit=limit, window=window)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after, scope="register_ip")
        data = RegisterInput(data=body)
        data.is_valid(raise_exception=True)
        profile = services.player_register(
            username=data.validated_data["username"],
            password=data.validated_data["password"],
            display_name=data.validated_data["display_name"],
            tz_name=data.validated_data.get("timezone"),
        )
        return Response(RegisterOutput(profile).data, status=status.HTTP_201_CREATED)


class ProfileViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="profile_get",
        summary="The student's profile",
        responses={200: ProfileOutput},
        tags=["profile"],
    )
    def retrieve(self, request: Request) -> Response:
        profile = selectors.player_get(player_id=current_student(request).player_id)
        return Response(ProfileOutput(profile).data)

    @extend_schema(
        operation_id="profile_update",
        summary="Change the display name or time zone",
        description="A new time zone takes effect at the next local midnight (timezone_pending until then).",
        request=ProfileUpdateInput,
        examples=[OpenApiExample("Move to Paris", value={"timezone": "Europe/Paris"}, request_only=True)],
        responses={
            200: ProfileOutput,
            **error_responses(403, describe={403: "device_mismatch, permission_denied, timezone_change_cooldown"}),
        },
        tags=["profile"],
    )
    def partial_update(self, request: Request) -> Response:
        data = ProfileUpdateInput(data=json_object(request))
        data.is_valid(raise_exception=True)
        profile = services.player_update_profile(player_id=current_student(request).player_id, data=data.validated_data)
        return Response(ProfileOutput(profile).data)

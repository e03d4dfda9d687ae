from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import validation_error
from core.openapi import error_responses, idempotency_parameters
from players import timezones
from players.permissions import HasServiceScope, current_student
from players.views import json_object
from wallets import idempotency, rules, selectors, services, sync
from wallets.serializers import (
    HistoryOutput,
    LessonCompleteInput,
    LessonCompleteOutput,
    ServiceAwardInput,
    ServiceAwardOutput,
    StreakRestoreInput,
    StreakRestoreOutput,
    WalletOutput,
)


def lesson_score(body: dict[str, Any]) -> int | None:
    """The body's score. The usual bodies (``{}``, ``{"score": null}``, ``{"score": <0-100>}``)
    are read directly: building the input serializer cost ~50 µs, a tenth of the request's own
    Python (bench/middleware.py). Anything else goes through it, for its exact answers."""
    if not body or (len(body) == 1 and "score" in body):
        score = body.get("score")
        # type(), not isinstance(): a bool is an int in Python, and the API refuses true/false.
        if score is None or (type(score) is int and 0 <= score <= 100):
            return score
    data = LessonCompleteInput(data=body)
    data.is_valid(raise_exception=True)
    return data.validated_data.get("score")  # type: ignore[no-any-return]


def _respond(outcome: services.AwardOutcome) -> Response:
    response = Response(outcome.body, status=outcome.status)
    if outcome.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


class WalletViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="wallet_get",
        responses={200: WalletOutput, **error_responses(400, 401, 403, 503)},
        tags=["wallet"],
    )
    def retrieve(self, request: Request) -> Response:
        student = current_student(request)
        now = timezone.now()
        today = timezones.student_day(student, now)
        return Response(sync.wallet_read(player_id=student.player_id, today=today))

    @extend_schema(
        operation_id="wallet_history",
        parameters=[
            OpenApiParameter(
                "cursor",
                {"type": "string", "maxLength": selectors.CURSOR_MAX_LENGTH, "pattern": "^[A-Za-z0-9_-]*$"},
                OpenApiParameter.QUERY,
                required=False,
                description="The opaque cursor of a previous page's next link.",
            ),
            OpenApiParameter(
                "page_size",
                {"type": "integer", "minimum": 1, "maximum": selectors.MAX_PAGE, "default": selectors.DEFAULT_PAGE},
                OpenApiParameter.QUERY,
                required=False,
                description=f"1-{selectors.MAX_PAGE}, default {selectors.DEFAULT_PAGE}.",
            ),
        ],
        responses={200: HistoryOutput, **error_responses(400, 401, 403, 503)},
        tags=["wallet"],
    )
    def history(self, request: Request) -> Response:
        student = current_student(request)
        raw_size = request.query_params.get("page_size", str(selectors.DEFAULT_PAGE))
        # ASCII digits only: "²".isdigit() is true and int() refuses it.
        if not (raw_size.isascii() and raw_size.isdigit() and len(raw_size) <= len(str(selectors.MAX_PAGE))) or not (
            1 <= int(raw_size) <= selectors.MAX_PAGE
        ):
            raise validation_error({"page_size": [f"An integer from 1 to {selectors.MAX_PAGE}."]})
        cursor = request.query_params.get("cursor") or None
        if cursor is not None and len(cursor) > selectors.CURSOR_MAX_LENGTH:
            raise validation_error({"cursor": ["Invalid cursor."]})
        page, next_cursor = selectors.wallet_history(player_id=student.player_id, cursor=cursor, limit=int(raw_size))
        next_url = None
        if next_cursor:
            next_url = request.build_absolute_uri(f"{request.path}?cursor={next_cursor}&page_size={raw_size}")
        return Response(HistoryOutput({"next": next_url, "previous": None, "results": page}).data)


class LessonViewSet(viewsets.ViewSet):
    @extend_schema(
        operation_id="lesson_complete",
        request=LessonCompleteInput,
        parameters=[
            OpenApiParameter(
                "lesson_id",
                str,
                OpenApiParameter.PATH,
                # LESSON_ID_RE is matched whole (fullmatch); anchored for OpenAPI's ECMA regex, where
                # `$` does not admit a trailing newline either.
                pattern=f"^{rules.LESSON_ID_RE.pattern}$",
                description="1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
            ),
            *idempotency_parameters(),
        ],
        responses={201: LessonCompleteOutput, **error_responses(400, 401, 403, 409, 415, 422, 429, 503)},
        tags=["wallet"],
    )
    def complete(self, request: Request, lesson_id: str) -> Response:
        student = current_student(request)
        key = idempotency.key_from_header(request.META.get("HTTP_IDEMPOTENCY_KEY"))
        # An absent body is an empty object; false, 0, [] or null is not an object (400).
        body = json_object(request)
        outcome = services.wallet_lesson_complete(
            player_id=student.player_id,
            timezone_name=student.effective_timezone(timezone.now()),
            lesson_id=lesson_id,
            score=lesson_score(body),
            idem_key=key,
            body=body,
        )
        return _respond(outcome)


class ServiceAwardViewSet(viewsets.ViewSet):
    service_only = True  # no device step: 401 not_authenticated without an Api-Key
    permission_classes = [HasServiceScope]
    required_scope = "award_xp"

    @extend_schema(
        operation_id="wallet_award_xp",
        request=ServiceAwardInput,
        parameters=idempotency_parameters(),
        responses={201: ServiceAwardOutput, **error_responses(400, 401, 403, 404, 409, 415, 422, 429, 503)},
        tags=["wallet"],
    )
    def create(self, request: Request) -> Response:
        key = idempotency.key_from_header(request.META.get("HTTP_IDEMPOTENCY_KEY"))
        body = json_object(request)
        data = ServiceAwardInput(data=body)
        data.is_valid(raise_exception=True)
        service: Any = request.user  # a ServicePrincipal (HasServiceScope)
        outcome = services.wallet_service_award(
            caller_id=service.pk,
            player_id=data.validated_data["player"],
            amount=data.validated_data["amount"],
            reason=data.validated_data["reason"],
            idem_key=key,
            body=body,
        )
        return _respond(outcome)


class StreakRestoreViewSet(viewsets.ViewSet):
    service_only = True  # no device step: 401 not_authenticated without an Api-Key
    permission_classes = [HasServiceScope]
    required_scope = "restore_streak"

    @extend_schema(
        operation_id="streak_restore",
        request=StreakRestoreInput,
        parameters=idempotency_parameters(),
        responses={201: StreakRestoreOutput, **error_responses(400, 401, 403, 404, 409, 415, 422, 429, 503)},
        tags=["wallet"],
    )
    def create(self, request: Request, player_id: int) -> Response:
        key = idempotency.key_from_header(request.META.get("HTTP_IDEMPOTENCY_KEY"))
        data = StreakRestoreInput(data=json_object(request))
        data.is_valid(raise_exception=True)
        service = request.user
        outcome = services.wallet_restore_streak(
            player_id=int(player_id),
            reason=data.validated_data["reason"],
            caller=f"k:{service.pk}",
            idem_key=key,
            actor=f"service:{getattr(service, 'name', service.pk)}",
        )
        return _respond(outcome)

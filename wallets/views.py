from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from memora_project.errors import validation_error
from memora_project.openapi import error_responses, idempotency_parameters
from players import timezones
from players.models import PlayerProfile
from players.permissions import HasServiceScope, current_student
from players.views import json_object
from wallets import idempotency, rules, selectors, services
from wallets.models import EventKind
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
        today = timezones.local_day(now, student.effective_timezone(now))
        return Response(services.wallet_read(player_id=student.player_id, today=today))

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
        if not rules.LESSON_ID_RE.fullmatch(lesson_id):
            raise validation_error({"lesson_id": ["1-64 characters: letters, digits, '_', '.', '-'."]})
        # An absent body is an empty object; false, 0, [] or null is not an object (400).
        body = json_object(request)
        data = LessonCompleteInput(data=body)
        data.is_valid(raise_exception=True)
        score = data.validated_data.get("score")
        now = timezone.now()
        tz_name = student.effective_timezone(now)
        scope = idempotency.scope(
            caller=f"p:{student.player_id}", endpoint="lesson_complete", player_id=student.player_id
        )
        day_ends_in = (timezones.next_local_midnight(now, tz_name) - now).total_seconds()
        outcome = services.wallet_award(
            request=services.AwardRequest(
                player_id=student.player_id,
                kind=EventKind.LESSON,
                base_amount=rules.lesson_base_xp(score),
                local_day=timezones.local_day(now, tz_name),
                idem_scope=scope,
                idem_key=key,
                fingerprint=idempotency.fingerprint(
                    method="POST", route="lesson_complete", path_params={"lesson_id": lesson_id}, body=body
                ),
                lesson_id=lesson_id,
                rate_limit=settings.MEMORA_RATE_LESSONS_PLAYER,
                daily_limit=(settings.MEMORA_LESSONS_PER_DAY, day_ends_in)
                if settings.MEMORA_LESSONS_PER_DAY > 0
                else None,
            )
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
        player_id = data.validated_data["player"]
        profile = PlayerProfile.objects.filter(pk=player_id).first()
        if profile is None:
            raise validation_error({"player": ["No such player."]})
        service = request.user
        scope = idempotency.scope(caller=f"k:{service.pk}", endpoint="wallet_award_xp", player_id=player_id)
        outcome = services.wallet_award(
            request=services.AwardRequest(
                player_id=player_id,
                kind=EventKind.SERVICE,
                base_amount=data.validated_data["amount"],
                local_day=services.local_day_for(profile=profile, at=timezone.now()),
                idem_scope=scope,
                idem_key=key,
                fingerprint=idempotency.fingerprint(method="POST", route="wallet_award_xp", path_params={}, body=body),
                reason=data.validated_data["reason"],
            )
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

"""Every change to a student's profile."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApiError, validation_error
from players import timezones
from players.models import PlayerProfile
from players.signals import profile_changed


def player_promote_timezone(*, profile: PlayerProfile, now: dt.datetime) -> bool:
    """Make a pending timezone current once its local midnight has passed (on the given object)."""
    in_force = timezones.student_zone(profile, now)
    if profile.timezone_pending and in_force == profile.timezone_pending:
        profile.timezone = profile.timezone_pending
        profile.timezone_pending = ""
        profile.timezone_effective_at = None
        return True
    return False


@transaction.atomic
def player_register(*, username: str, password: str, display_name: str, tz_name: str | None) -> PlayerProfile:
    if not settings.MEMORA_REGISTRATION_OPEN:
        raise ApiError("registration_closed", "Registration is closed.", status=403)
    user_model = get_user_model()
    errors: dict[str, list[str]] = {}
    if tz_name is not None and not timezones.is_known(tz_name):
        errors["timezone"] = [f"Unknown time zone '{tz_name}'."]
    if user_model.objects.filter(username__iexact=username).exists():
        errors["username"] = ["This username is taken."]
    candidate = user_model(username=username)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise validation_error(errors)
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(username=username, password=password)
    except IntegrityError:
        raise validation_error({"username": ["This username is taken."]}) from None
    return PlayerProfile.objects.create(user=user, display_name=display_name, timezone=tz_name or "UTC")


@transaction.atomic
def player_update_profile(*, player_id: int, data: dict[str, Any]) -> PlayerProfile:
    now = timezone.now()
    profile = PlayerProfile.objects.select_for_update().select_related("user").get(pk=player_id)
    fields: set[str] = set()
    if player_promote_timezone(profile=profile, now=now):
        fields |= {"timezone", "timezone_pending", "timezone_effective_at"}
    if "display_name" in data and data["display_name"] != profile.display_name:
        profile.display_name = data["display_name"]
        fields.add("display_name")
    requested = data.get("timezone")
    target = profile.timezone_pending or profile.timezone
    if requested is not None and requested != target:
        if not timezones.is_known(requested):
            raise validation_error({"timezone": [f"Unknown time zone '{requested}'."]})
        cooldown = dt.timedelta(seconds=settings.MEMORA_TIMEZONE_CHANGE_COOLDOWN)
        if profile.timezone_changed_at and now < profile.timezone_changed_at + cooldown:
            days = settings.MEMORA_TIMEZONE_CHANGE_COOLDOWN // 86400
            raise ApiError(
                "timezone_change_cooldown",
                f"You can change your time zone once every {days} days.",
                status=403,
                next_allowed_at=(profile.timezone_changed_at + cooldown).isoformat().replace("+00:00", "Z"),
            )
        if requested == profile.timezone:
            # Back to the current zone: cancel the pending change (still counts as a change).
            profile.timezone_pending = ""
            profile.timezone_effective_at = None
        else:
            # From the next local midnight in the current zone: flipping zones cannot mint a day.
            profile.timezone_pending = requested
            profile.timezone_effective_at = timezones.next_local_midnight(now, profile.timezone)
        profile.timezone_changed_at = now
        fields |= {"timezone", "timezone_pending", "timezone_effective_at", "timezone_changed_at"}
    if fields:
        profile.save(update_fields=[*sorted(fields), "updated_at"])
        if fields & {"timezone", "timezone_pending", "timezone_effective_at"}:
            profile_changed.send(sender=PlayerProfile, player_id=profile.pk)
    return profile

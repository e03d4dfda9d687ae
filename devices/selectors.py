"""Reads of the identity half."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import F, QuerySet

from devices.models import AuthorizedDevice, PlayerAuthState, PlayerSession
from players.models import PlayerProfile

TOMBSTONE_LIMIT = 50


def device_list_active(*, player_id: int) -> QuerySet[AuthorizedDevice]:
    return AuthorizedDevice.objects.filter(player_id=player_id, revoked_at__isnull=True).order_by("authorized_at", "id")


def device_list_for_support(*, player_id: int) -> QuerySet[AuthorizedDevice]:
    """Every device of the student, revoked ones included: active first, then the most recently
    revoked, so support sees who revoked a device and why."""
    return (
        AuthorizedDevice.objects.filter(player_id=player_id)
        .select_related("revoked_by")
        .order_by(F("revoked_at").desc(nulls_first=True), "-last_seen_at", "-id")
    )


def removal_allowed_at(*, player_id: int, now: dt.datetime) -> dt.datetime:
    state = PlayerAuthState.objects.filter(player_id=player_id).first()
    if state is None or state.last_removal_at is None:
        return now
    return max(now, state.last_removal_at + dt.timedelta(seconds=settings.MEMORA_DEVICE_REMOVAL_COOLDOWN))


def tombstone_for(session: PlayerSession) -> str:
    """``code|reason`` of an ended session, the order of the design: revoked > replaced > ended."""
    if session.device.revoked_at is not None:
        return "device_revoked|"
    if session.end_reason == "replaced":
        return "session_replaced|"
    if session.end_reason == "device_revoked":
        return "device_revoked|"
    return f"session_ended|{session.end_reason}"


def _epoch(value: dt.datetime) -> str:
    return repr(value.timestamp())


def cache_snapshot(*, player_id: int) -> tuple[int, dict[str, Any]] | None:
    """What Redis must hold for the student, from the database: (generation, fields)."""
    profile = PlayerProfile.objects.filter(pk=player_id).first()
    if profile is None:
        return None
    state = PlayerAuthState.objects.filter(player_id=player_id).first()
    generation = state.generation if state else 0
    fields: dict[str, Any] = {
        "uid": str(profile.user_id),
        "tz": profile.timezone,
        "tzp": profile.timezone_pending,
        "tze": _epoch(profile.timezone_effective_at) if profile.timezone_effective_at else "",
        "devs": ",".join(str(d) for d in device_list_active(player_id=player_id).values_list("device_id", flat=True)),
    }
    live = PlayerSession.objects.select_related("device").filter(player_id=player_id, is_live=True).first()
    if live is not None and live.device.revoked_at is None:
        fields.update(
            {
                "cur": live.token_digest,
                "sid": str(live.pk),
                "dev": str(live.device.device_id),
                "dname": live.device.name,
                "plat": live.device.platform,
                "started": _epoch(live.started_at),
                "expires": _epoch(live.expires_at),
                "seen": _epoch(live.last_seen_at),
                "seenw": _epoch(live.last_seen_at),
            }
        )
    # Ended sessions past their lifetime keep their tombstone too: ended outranks expired, as on
    # the database path. The most recent ones are enough (older tokens read as unknown).
    ended = (
        PlayerSession.objects.select_related("device")
        .filter(player_id=player_id, is_live__isnull=True)
        .order_by("-ended_at", "-id")[:TOMBSTONE_LIMIT]
    )
    for session in ended:
        fields[f"t:{session.token_digest}"] = tombstone_for(session)
    if live is not None and live.device.revoked_at is not None:
        fields[f"t:{live.token_digest}"] = "device_revoked|"
    return generation, fields

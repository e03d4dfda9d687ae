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
    # The live session and the most recent ended ones, in one query (a live session sorts first:
    # its ended_at is NULL). Ended sessions past their lifetime keep their tombstone too: ended
    # outranks expired, as on the database path; older tokens read as unknown.
    sessions = list(
        PlayerSession.objects.select_related("device")
        .filter(player_id=player_id)
        .order_by(F("ended_at").desc(nulls_first=True), "-id")[: TOMBSTONE_LIMIT + 1]
    )
    live = next((x for x in sessions if x.is_live), None)
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
    for session in [x for x in sessions if x.is_live is None][:TOMBSTONE_LIMIT]:
        fields[f"t:{session.token_digest}"] = tombstone_for(session)
    if live is not None and live.device.revoked_at is not None:
        fields[f"t:{live.token_digest}"] = "device_revoked|"
    return generation, fields

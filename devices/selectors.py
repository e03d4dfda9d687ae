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
    return _tombstone(device_revoked=session.device.revoked_at is not None, end_reason=session.end_reason)


def _tombstone(*, device_revoked: bool, end_reason: str) -> str:
    if device_revoked:
        return "device_revoked|"
    if end_reason == "replaced":
        return "session_replaced|"
    if end_reason == "device_revoked":
        return "device_revoked|"
    return f"session_ended|{end_reason}"


def _epoch(value: dt.datetime) -> str:
    return repr(value.timestamp())


# One row per session, no model instances (a login reads up to 51 of them: DESIGN, issue 14).
_SESSION_COLUMNS = (
    "pk",
    "token_digest",
    "is_live",
    "end_reason",
    "started_at",
    "expires_at",
    "last_seen_at",
    "device__device_id",
    "device__name",
    "device__platform",
    "device__revoked_at",
)


def cache_fields(*, profile: PlayerProfile, active_device_ids: list[str] | None = None) -> dict[str, Any]:
    """What Redis must hold for the student besides the generation. ``active_device_ids``: the
    caller's own list (a login that holds the student's lock and has just read the devices)."""
    player_id = profile.pk
    if active_device_ids is None:
        active_device_ids = [
            str(d) for d in device_list_active(player_id=player_id).values_list("device_id", flat=True)
        ]
    fields: dict[str, Any] = {
        "uid": str(profile.user_id),
        "tz": profile.timezone,
        "tzp": profile.timezone_pending,
        "tze": _epoch(profile.timezone_effective_at) if profile.timezone_effective_at else "",
        "devs": ",".join(active_device_ids),
    }
    # The live session and the most recent ended ones, in one query (a live session sorts first:
    # its ended_at is NULL). Ended sessions past their lifetime keep their tombstone too: ended
    # outranks expired, as on the database path; older tokens read as unknown.
    rows = list(
        PlayerSession.objects.filter(player_id=player_id)
        .order_by(F("ended_at").desc(nulls_first=True), "-id")
        .values_list(*_SESSION_COLUMNS)[: TOMBSTONE_LIMIT + 1]
    )
    live = next((row for row in rows if row[2]), None)
    ended = [row for row in rows if row[2] is None][:TOMBSTONE_LIMIT]
    if live is not None:
        sid, digest, _, _, started, expires, seen, device_id, name, platform, revoked_at = live
        if revoked_at is None:
            fields.update(
                {
                    "cur": digest,
                    "sid": str(sid),
                    "dev": str(device_id),
                    "dname": name,
                    "plat": platform,
                    "started": _epoch(started),
                    "expires": _epoch(expires),
                    "seen": _epoch(seen),
                    "seenw": _epoch(seen),
                }
            )
    for row in ended:
        fields[f"t:{row[1]}"] = _tombstone(device_revoked=row[10] is not None, end_reason=row[3])
    if live is not None and live[10] is not None:
        fields[f"t:{live[1]}"] = "device_revoked|"
    return fields


def cache_snapshot(*, player_id: int) -> tuple[int, dict[str, Any]] | None:
    """What Redis must hold for the student, from the database: (generation, fields)."""
    profile = PlayerProfile.objects.filter(pk=player_id).first()
    if profile is None:
        return None
    state = PlayerAuthState.objects.filter(player_id=player_id).first()
    generation = state.generation if state else 0
    return generation, cache_fields(profile=profile)

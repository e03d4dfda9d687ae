from __future__ import annotations

from django.utils import timezone

from players.models import PlayerProfile
from players.services import player_promote_timezone


def player_get(*, player_id: int) -> PlayerProfile:
    """The profile with its effective timezone (a pending change past its midnight shown as done)."""
    profile = PlayerProfile.objects.select_related("user").get(pk=player_id)
    player_promote_timezone(profile=profile, now=timezone.now())
    return profile

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from players.serializers import StrictCharField, StrictIntegerField


class WalletOutput(serializers.Serializer):
    xp_total = serializers.IntegerField()
    xp_today = serializers.IntegerField()
    current_streak = serializers.IntegerField()
    longest_streak = serializers.IntegerField()
    last_activity_date = serializers.DateField(allow_null=True)
    today = serializers.DateField()
    streak_active_today = serializers.BooleanField()
    streak_freezes = serializers.IntegerField()


class LessonCompleteInput(serializers.Serializer):
    score = StrictIntegerField(min_value=0, max_value=100, required=False, allow_null=True)


class LessonCompleteOutput(serializers.Serializer):
    event_id = serializers.UUIDField()
    xp_awarded = serializers.IntegerField()
    capped = serializers.BooleanField()
    wallet = WalletOutput()


class ServiceAwardInput(serializers.Serializer):
    player = StrictIntegerField(min_value=1, max_value=2**53)
    amount = StrictIntegerField(min_value=1)  # max_value: the setting, read per instance (get_fields)
    reason = StrictCharField(max_length=200)

    def get_fields(self) -> dict[str, serializers.Field]:
        # The maximum is a setting: built here, it is both the check and the schema's `maximum`.
        fields = super().get_fields()
        fields["amount"] = StrictIntegerField(min_value=1, max_value=settings.MEMORA_XP_MANUAL_MAX)
        return fields


class ServiceAwardOutput(serializers.Serializer):
    event_id = serializers.UUIDField()
    xp_awarded = serializers.IntegerField()
    wallet = WalletOutput()


class HistoryEntryOutput(serializers.Serializer):
    event_id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=["lesson", "service", "freeze_earned", "freeze_used", "streak_restored"])
    lesson_id = serializers.CharField(allow_null=True)
    amount = serializers.IntegerField()
    reason = serializers.CharField(allow_null=True)
    local_day = serializers.DateField()
    accepted_at = serializers.DateTimeField()
    flushed = serializers.BooleanField()


class HistoryOutput(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = HistoryEntryOutput(many=True)


class StreakRestoreInput(serializers.Serializer):
    reason = StrictCharField(max_length=200)


class StreakRestoreOutput(serializers.Serializer):
    event_id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=["streak_restored"])
    streak_before = serializers.IntegerField()
    streak_after = serializers.IntegerField()
    wallet = WalletOutput()

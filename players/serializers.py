from __future__ import annotations

import unicodedata
from typing import Any

from django.contrib.auth import password_validation
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from players.models import PlayerProfile

USERNAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$",
    "3 to 32 characters: letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


def no_control_characters(value: str) -> None:
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise serializers.ValidationError("Control and invisible characters are not allowed.")


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else: DRF's CharField would turn 12345678 or 1.5 into text."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON number with an integral value, nothing else: DRF's IntegerField would take "5" and
    ``true`` (a bool is an int in Python)."""

    default_error_messages = {"invalid": "Must be an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return int(super().to_internal_value(data))


NO_CONTROL_CHARACTERS = "No control or invisible characters."


def password_min_length() -> int:
    """The shortest password AUTH_PASSWORD_VALIDATORS admit (at least 1: a blank one never is)."""
    lengths = [
        validator.min_length
        for validator in password_validation.get_default_password_validators()
        if isinstance(validator, password_validation.MinimumLengthValidator)
    ]
    return max([1, *lengths])


def new_password_field() -> StrictCharField:
    """A password being set. The service applies every rule of AUTH_PASSWORD_VALIDATORS (some compare
    it with the username); the field repeats the minimum length and names the rules, so that the
    schema states them. Built per serializer instance: the setting is read when it is used."""
    rules = " ".join(password_validation.password_validators_help_texts())
    return StrictCharField(
        min_length=password_min_length(),
        max_length=128,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text=f"Rules: {rules}",
    )


class RegisterInput(serializers.Serializer):
    username = StrictCharField(max_length=32, validators=[USERNAME_VALIDATOR])
    password = new_password_field()  # replaced per instance (get_fields)
    display_name = StrictCharField(max_length=64, validators=[no_control_characters], help_text=NO_CONTROL_CHARACTERS)
    timezone = StrictCharField(max_length=64, required=False, help_text="IANA time zone, default UTC.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["password"] = new_password_field()
        return fields


class ProfileUpdateInput(serializers.Serializer):
    display_name = StrictCharField(
        max_length=64, required=False, validators=[no_control_characters], help_text=NO_CONTROL_CHARACTERS
    )
    timezone = StrictCharField(max_length=64, required=False, help_text="IANA time zone.")


class PendingTimezoneOutput(serializers.Serializer):
    timezone = serializers.CharField()
    effective_at = serializers.DateTimeField()


class PlayerOutput(serializers.Serializer):
    """The player object inside other bodies (login)."""

    id = serializers.IntegerField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    timezone = serializers.CharField()


def player_summary(profile: PlayerProfile) -> dict[str, Any]:
    return {
        "id": profile.pk,
        "username": profile.user.username,
        "display_name": profile.display_name,
        "timezone": profile.timezone,
    }


class RegisterOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = PlayerProfile
        fields = ["id", "username", "display_name", "timezone", "created_at"]
        read_only_fields = fields


class ProfileOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    timezone_pending = serializers.SerializerMethodField()

    class Meta:
        model = PlayerProfile
        fields = ["id", "username", "display_name", "timezone", "timezone_pending", "created_at"]
        read_only_fields = fields

    @extend_schema_field(PendingTimezoneOutput(allow_null=True))
    def get_timezone_pending(self, obj: PlayerProfile) -> dict[str, Any] | None:
        if not obj.timezone_pending:
            return None
        return PendingTimezoneOutput({"timezone": obj.timezone_pending, "effective_at": obj.timezone_effective_at}).data

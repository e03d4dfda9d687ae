from __future__ import annotations

from rest_framework import serializers

from players.serializers import NO_CONTROL_CHARACTERS, PlayerOutput, StrictCharField, no_control_characters


class LoginInput(serializers.Serializer):
    username = StrictCharField(max_length=150, trim_whitespace=False)
    password = StrictCharField(max_length=128, trim_whitespace=False, style={"input_type": "password"})
    device_name = StrictCharField(
        max_length=64,
        required=False,
        allow_blank=True,
        validators=[no_control_characters],
        help_text=NO_CONTROL_CHARACTERS,
    )
    platform = StrictCharField(
        max_length=32,
        required=False,
        allow_blank=True,
        validators=[no_control_characters],
        help_text=NO_CONTROL_CHARACTERS,
    )
    replace_device_id = serializers.UUIDField(
        required=False, help_text="One of the devices listed by device_limit_reached."
    )


class DeviceOutput(serializers.Serializer):
    device_id = serializers.CharField()
    name = serializers.CharField()
    platform = serializers.CharField()
    authorized_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    is_current = serializers.BooleanField()


class LoginOutput(serializers.Serializer):
    token = serializers.CharField(help_text="mem_<player_id>_<secret>; shown once.")
    expires_at = serializers.DateTimeField()
    idle_timeout_seconds = serializers.IntegerField()
    device_proof = serializers.CharField(
        help_text="dp_<secret>; shown once. Keep it with the device id and send it as X-Device-Proof at the "
        "next login of this device: a lockout of the account then does not stop this device."
    )
    player = PlayerOutput()
    device = DeviceOutput()


class SessionDeviceOutput(serializers.Serializer):
    device_id = serializers.CharField()
    name = serializers.CharField()
    platform = serializers.CharField()


class SessionOutput(serializers.Serializer):
    device = SessionDeviceOutput()
    started_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


class DeviceListOutput(serializers.Serializer):
    results = DeviceOutput(many=True)
    removal_allowed_at = serializers.DateTimeField()

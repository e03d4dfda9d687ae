from __future__ import annotations

from django.conf import settings
from django.db import models

from players.models import PlayerProfile


class PlayerAuthState(models.Model):
    """Per-student state of the identity half that is not a device or a session.

    ``generation`` grows with every database-first change of the student's sessions and devices;
    the Redis copy carries the generation it was built from and never goes backwards.
    """

    player = models.OneToOneField(PlayerProfile, on_delete=models.CASCADE, primary_key=True, related_name="auth_state")
    generation = models.PositiveBigIntegerField(default=0)
    last_removal_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"auth state of player {self.player_id}"


class AuthorizedDevice(models.Model):
    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="devices")
    device_id = models.UUIDField()
    name = models.CharField(max_length=64, blank=True, default="")
    platform = models.CharField(max_length=32, blank=True, default="")
    authorized_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoke_reason = models.CharField(max_length=200, blank=True, default="")
    # Support's revocation blocks the device id until support re-allows it; a student's own removal
    # or a replacement at login only frees the slot.
    login_blocked = models.BooleanField(default=False)
    # SHA-256 of the device proof that the last login of this device returned (statement 12): a
    # login presenting it is held only to this device's own lockout counter. Replaced at every
    # login of the device; the proof itself is never stored.
    proof_digest = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)

    class Meta:
        verbose_name = "authorized device"
        constraints = [
            models.UniqueConstraint(fields=["player", "device_id"], name="device_unique_per_player"),
            models.CheckConstraint(
                condition=models.Q(login_blocked=False) | models.Q(revoked_at__isnull=False),
                name="device_blocked_only_when_revoked",
            ),
        ]
        indexes = [models.Index(fields=["player", "revoked_at"], name="device_player_active")]

    def __str__(self) -> str:
        return f"{self.name or 'device'} ({self.device_id})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class EndReason(models.TextChoices):
    REPLACED = "replaced", "replaced by a later login"
    LOGOUT = "logout", "logout"
    PASSWORD_CHANGED = "password_changed", "password changed"
    DEACTIVATED = "deactivated", "account deactivated"
    ENDED_BY_SUPPORT = "ended_by_support", "ended by support"
    DEVICE_REVOKED = "device_revoked", "device revoked"


class PlayerSession(models.Model):
    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="sessions")
    device = models.ForeignKey(AuthorizedDevice, on_delete=models.CASCADE, related_name="sessions")
    # SHA-256 of the token; the token itself is never stored.
    token_digest = models.CharField(max_length=64, unique=True)
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True, default="")
    # True while live, NULL once ended: the unique constraint allows one live session per student
    # (MariaDB has no partial index; NULLs never collide).
    is_live = models.BooleanField(null=True, default=True)

    class Meta:
        verbose_name = "session"
        constraints = [
            models.UniqueConstraint(fields=["player", "is_live"], name="session_one_live_per_player"),
            models.CheckConstraint(
                condition=(models.Q(is_live=True) & models.Q(ended_at__isnull=True) & models.Q(end_reason=""))
                | (models.Q(is_live__isnull=True) & models.Q(ended_at__isnull=False) & ~models.Q(end_reason="")),
                name="session_live_xor_ended",
            ),
        ]
        indexes = [models.Index(fields=["player", "started_at"], name="session_player_started")]

    def __str__(self) -> str:
        return f"session {self.pk} of player {self.player_id}"


class AuditAction(models.TextChoices):
    AUTHORIZED = "authorized", "device authorized"
    REVOKED = "revoked", "device revoked by support"
    REMOVED = "removed", "device removed by the student"
    REPLACED = "replaced", "device replaced at login"
    ALLOWED = "allowed", "device allowed again"
    SESSIONS_ENDED = "sessions_ended", "sessions ended"
    LOGIN_LOCKS_CLEARED = "login_locks_cleared", "login locks cleared by support"


class DeviceAuditEntry(models.Model):
    """Who did what to a student's devices and sessions, when and why. Append-only."""

    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="device_audit")
    device = models.ForeignKey(AuthorizedDevice, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True, default="")
    at = models.DateTimeField()

    class Meta:
        verbose_name = "device audit entry"
        verbose_name_plural = "device audit entries"
        indexes = [models.Index(fields=["player", "at"], name="audit_player_at")]
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} at {self.at:%Y-%m-%d %H:%M}"


class CacheOutbox(models.Model):
    """A student whose Redis copy must be rebuilt: written in the transaction of the change,
    deleted once Redis holds it. What is left here when Redis was away is reconciled later."""

    # No database constraint: the row of a student deleted while Redis was away must outlive
    # them, so the reconciler still removes their copy (whose sessions would otherwise answer).
    player = models.ForeignKey(PlayerProfile, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    generation = models.PositiveBigIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "cache outbox entry"
        verbose_name_plural = "cache outbox"
        indexes = [models.Index(fields=["player", "generation"], name="outbox_player_gen")]

    def __str__(self) -> str:
        return f"rebuild player {self.player_id} (generation {self.generation})"


class LoginFailure(models.Model):
    """Failed logins counted in the database while Redis is away. ``device_id`` is set when the
    attempt proved its device (it then counts toward that device's lock, not the address's)."""

    username_key = models.CharField(max_length=64)
    ip = models.GenericIPAddressField()
    device_id = models.UUIDField(null=True, blank=True)
    at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["username_key", "at"], name="loginfail_user_at"),
            models.Index(fields=["username_key", "ip", "at"], name="loginfail_user_ip_at"),
            models.Index(fields=["username_key", "device_id", "at"], name="loginfail_user_dev_at"),
        ]

    def __str__(self) -> str:
        return f"failed login from {self.ip} at {self.at:%Y-%m-%d %H:%M:%S}"


class ServiceApiKey(models.Model):
    """A key for another backend. Only the SHA-256 digest is stored; the key is shown once."""

    class Scope(models.TextChoices):
        AWARD_XP = "award_xp", "award XP"
        RESTORE_STREAK = "restore_streak", "restore a streak"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "service API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

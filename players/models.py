from __future__ import annotations

from django.conf import settings
from django.db import models


class PlayerProfile(models.Model):
    """A student. ``id`` is the ``player_id`` the API and the admin speak."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="player_profile")
    display_name = models.CharField(max_length=64)
    timezone = models.CharField(max_length=64, default="UTC")
    # A requested timezone change waits for the student's next local midnight.
    timezone_pending = models.CharField(max_length=64, blank=True, default="")
    timezone_effective_at = models.DateTimeField(null=True, blank=True)
    timezone_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "student"
        verbose_name_plural = "students"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(timezone_pending="") | models.Q(timezone_effective_at__isnull=False),
                name="player_pending_timezone_has_effective_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} (#{self.pk})"

    @property
    def username(self) -> str:
        return str(self.user.username)

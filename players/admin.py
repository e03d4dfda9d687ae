"""The student list that support staff search.

Read-only: a profile changes through the student's own API (the timezone rule, the cache), never
by hand here. ``devices.admin`` extends this admin with the student's devices, sessions, audit and
the "End sessions" action, since ``players`` may not import ``devices``.
"""

from __future__ import annotations

from typing import ClassVar

from django.contrib import admin
from django.http import HttpRequest

from players.models import PlayerProfile


@admin.register(PlayerProfile)
class PlayerProfileAdmin(admin.ModelAdmin):
    list_display = ("id", "username", "display_name", "timezone", "created_at")
    list_display_links = ("id", "username")
    list_select_related = ("user",)
    search_fields = ("user__username", "display_name")
    ordering = ("-id",)
    show_full_result_count = False
    fields: ClassVar[tuple[str, ...]] = (
        "id",
        "username",
        "display_name",
        "timezone",
        "timezone_pending",
        "timezone_effective_at",
        "timezone_changed_at",
        "created_at",
        "updated_at",
    )
    readonly_fields: ClassVar[tuple[str, ...]] = fields

    @admin.display(description="username", ordering="user__username")
    def username(self, obj: PlayerProfile) -> str:
        return obj.user.username

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # students register through the API

    def has_change_permission(self, request: HttpRequest, obj: PlayerProfile | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PlayerProfile | None = None) -> bool:
        return False

"""The student list that support staff search.

Read-only: a profile changes through the student's own API (the timezone rule, the cache), never
by hand here. ``devices.admin`` extends this admin with the student's devices, sessions, audit and
the "End sessions" action, since ``players`` may not import ``devices``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.http import HttpRequest, HttpResponse
from django.utils.text import capfirst

from players.models import PlayerProfile


class SupportWordsMixin(admin.ModelAdmin):
    """Page titles in a support agent's words, for admins whose detail pages are read-only.
    Django titles such a list "Select authorized device to change" and its detail page "View
    authorized device": words about editing records that these pages only show (what changes
    something is named on its own button and confirmation page). ``devices`` uses it too."""

    list_title: ClassVar[str] = ""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if IS_POPUP_VAR not in request.GET:  # a pop-up's "Select …" is a real choice
            title = self.list_title or capfirst(self.opts.verbose_name_plural)
            extra_context = {"title": title, **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {"title": capfirst(self.opts.verbose_name), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(PlayerProfile)
class PlayerProfileAdmin(SupportWordsMixin):
    list_title = "Find a student"
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

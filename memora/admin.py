"""The student overview and the streak restore: the admin pages that span the apps.

``devices.admin`` extends ``players``' student admin with devices and sessions; this module
extends it once more with the wallet, so that support answers "why did my streak reset?" from
one page.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core import hotstate
from core.errors import ApiError
from devices import loginlimits
from devices import selectors as device_selectors
from devices import services as device_services
from devices.admin import SUPPORT_ACTION_PERMISSION, StudentAdmin
from devices.models import DeviceAuditEntry, PlayerSession
from players import timezones
from players.models import PlayerProfile
from wallets import selectors as wallet_selectors
from wallets import services as wallet_services
from wallets.models import EventKind, LedgerEvent, PlayerWallet


class RestoreStreakForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        strip=True,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="Why the streak is restored (kept in the ledger and shown in the audit).",
    )


class StudentOverviewAdmin(StudentAdmin):
    actions: tuple[str, ...] = (*StudentAdmin.actions, "restore_streak")  # type: ignore[assignment]
    list_display: tuple[str, ...] = (*StudentAdmin.list_display, "overview_link")  # type: ignore[assignment]

    @admin.display(description="overview")
    def overview_link(self, obj: PlayerProfile) -> str:
        return format_html('<a href="{}">overview</a>', reverse("admin:players_playerprofile_overview", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<int:player_id>/overview/",
                self.admin_site.admin_view(self.overview_view),
                name="players_playerprofile_overview",
            ),
            path(
                "<int:player_id>/overview/clear-login-locks/",
                self.admin_site.admin_view(self.clear_login_locks_view),
                name="players_playerprofile_clear_login_locks",
            ),
        ]
        return custom + super().get_urls()

    def overview_view(self, request: HttpRequest, player_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        profile = get_object_or_404(PlayerProfile.objects.select_related("user"), pk=player_id)
        now = timezone.now()
        today = timezones.local_day(now, profile.timezone)
        wallet = wallet_services.wallet_read(player_id=player_id, today=today)
        stored = PlayerWallet.objects.filter(player_id=player_id).first()
        history, _ = wallet_selectors.wallet_history(player_id=player_id, cursor=None, limit=50)
        restores = LedgerEvent.objects.filter(player_id=player_id, kind=EventKind.STREAK_RESTORED).order_by(
            "-accepted_at"
        )[:20]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Overview of {profile.display_name} ({profile.user.username})",
            "opts": self.opts,
            "profile": profile,
            "today": today,
            "wallet": wallet,
            "stored": stored,
            "history": history,
            "devices": device_selectors.device_list_active(player_id=player_id),
            "sessions": PlayerSession.objects.filter(player_id=player_id)
            .select_related("device")
            .order_by("-started_at")[:20],
            "audit": DeviceAuditEntry.objects.filter(player_id=player_id).select_related("device", "actor")[:50],
            "restores": restores,
            "login_lock_seconds": self._lock_seconds(profile),
            "can_clear_locks": request.user.has_perm(SUPPORT_ACTION_PERMISSION),
            "dead_letters": wallet_selectors.dead_letter_list_open(player_ids=[player_id], limit=50),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/memora/student_overview.html", context)

    @staticmethod
    def _lock_seconds(profile: PlayerProfile) -> int:
        return math.ceil(loginlimits.login_lock_status(username=profile.user.username))

    def clear_login_locks_view(self, request: HttpRequest, player_id: int) -> HttpResponse:
        """POST only (CSRF-protected by the admin): lift the student's login locks, audited."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(SUPPORT_ACTION_PERMISSION):
            raise PermissionDenied
        profile = get_object_or_404(PlayerProfile.objects.select_related("user"), pk=player_id)
        try:
            removed = device_services.login_locks_clear(player_id=profile.pk, actor=cast(User, request.user))
        except hotstate.RedisUnavailable:
            self.message_user(request, "Redis is unreachable: the locks still stand. Try again.", messages.ERROR)
        else:
            self.message_user(
                request,
                f"Login locks of {profile.user.username} cleared ({removed} counter(s) and lock(s) removed).",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:players_playerprofile_overview", args=[profile.pk]))

    @admin.action(description="Restore the streak the last break reset (asks for a reason)", permissions=["restore"])
    def restore_streak(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        form = RestoreStreakForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            for profile in queryset.select_related("user"):
                try:
                    outcome = wallet_services.wallet_restore_streak(
                        player_id=profile.pk,
                        reason=form.cleaned_data["reason"],
                        caller=f"admin:{request.user.pk}",
                        idem_key=uuid.uuid4().hex,
                        actor=f"admin:{request.user.get_username()}",
                    )
                except ApiError as error:
                    messages_ = [m for found in error.extra.get("errors", {}).values() for m in found]
                    detail = "; ".join(messages_) or error.detail
                    self.message_user(request, f"{profile.user.username}: {detail}", messages.WARNING)
                    continue
                body = outcome.body
                self.message_user(
                    request,
                    f"{profile.user.username}: streak restored from {body['streak_before']} to {body['streak_after']}.",
                    messages.SUCCESS,
                )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Restore streaks",
            "opts": self.opts,
            "students": queryset.select_related("user"),
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/memora/restore_streak.html", context)

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("wallets.change_playerwallet")


admin.site.unregister(PlayerProfile)
admin.site.register(PlayerProfile, StudentOverviewAdmin)

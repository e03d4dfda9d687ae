"""The student overview and the streak restore: the admin pages that span the apps.

``devices.admin`` extends ``players``' student admin with devices and sessions; this module
extends it once more with the wallet, so that support answers "why did my streak reset?" from
one page — and acts there: each of the overview's actions (revoke or re-allow a device, end the
sessions, restore the streak, clear the login locks) has a confirmation page (GET) that asks for
a reason where the audit keeps one, runs its service on a POST (the admin's CSRF check), and
returns to the overview with a message. They are gated by the Support group's permissions, like
the list actions they mirror.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
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
from devices.admin import (
    SUPPORT_ACTION_PERMISSION,
    AllowDeviceForm,
    RevokeDevicesForm,
    StudentAdmin,
    device_status,
)
from devices.models import AuthorizedDevice, DeviceAuditEntry, EndReason, PlayerSession
from players import timezones
from players.models import PlayerProfile
from wallets import selectors as wallet_selectors
from wallets import services as wallet_services
from wallets import sync as wallet_sync
from wallets.models import EventKind, LedgerEvent, PlayerWallet

# The admin is the support desk; its "View site" link leads to what this service shows the world.
admin.site.site_header = "Memora support desk"
admin.site.site_title = "Memora support"
admin.site.index_title = "Support desk"
admin.site.site_url = "/api/docs/"

# The streak restore is the one action outside ``devices``: the Support group holds it through
# wallets' migration 0003.
RESTORE_PERMISSION = "wallets.change_playerwallet"


class RestoreStreakForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        strip=True,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="Why the streak is restored (kept in the ledger and shown in the audit).",
    )


def _user(request: HttpRequest) -> User:
    return cast(User, request.user)


def _device_label(device: AuthorizedDevice) -> str:
    return f"“{device.name}”" if device.name else f"device {device.device_id}"


class StudentOverviewAdmin(StudentAdmin):
    actions: tuple[str, ...] = (*StudentAdmin.actions, "restore_streak")  # type: ignore[assignment]
    list_display: tuple[str, ...] = (*StudentAdmin.list_display, "overview_link")  # type: ignore[assignment]

    @admin.display(description="overview")
    def overview_link(self, obj: PlayerProfile) -> str:
        return format_html('<a href="{}">overview</a>', reverse("admin:players_playerprofile_overview", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:
        def route(suffix: str, view: Callable[..., HttpResponse], name: str) -> URLPattern:
            return path(
                f"<int:player_id>/overview/{suffix}",
                self.admin_site.admin_view(view),
                name=f"players_playerprofile_{name}",
            )

        custom = [
            route("", self.overview_view, "overview"),
            route("devices/<int:device_pk>/revoke/", self.revoke_device_view, "overview_revoke_device"),
            route("devices/<int:device_pk>/allow/", self.allow_device_view, "overview_allow_device"),
            route("end-sessions/", self.end_sessions_view, "overview_end_sessions"),
            route("restore-streak/", self.restore_streak_view, "overview_restore_streak"),
            route("clear-login-locks/", self.clear_login_locks_view, "clear_login_locks"),
        ]
        return custom + super().get_urls()

    def overview_view(self, request: HttpRequest, player_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        profile = get_object_or_404(PlayerProfile.objects.select_related("user"), pk=player_id)
        now = timezone.now()
        today = timezones.student_day(profile, now)
        wallet = wallet_sync.wallet_read(player_id=player_id, today=today)
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
            "devices": [
                (device, device_status(device))
                for device in device_selectors.device_list_for_support(player_id=player_id)
            ],
            "sessions": PlayerSession.objects.filter(player_id=player_id)
            .select_related("device")
            .order_by("-started_at")[:20],
            "audit": DeviceAuditEntry.objects.filter(player_id=player_id).select_related("device", "actor")[:50],
            "restores": restores,
            "login_lock_seconds": self._lock_seconds(profile),
            "can_act": request.user.has_perm(SUPPORT_ACTION_PERMISSION),
            "can_restore": request.user.has_perm(RESTORE_PERMISSION),
            "dead_letters": wallet_selectors.dead_letter_list_open(player_ids=[player_id], limit=50),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/memora/student_overview.html", context)

    @staticmethod
    def _lock_seconds(profile: PlayerProfile) -> int:
        return math.ceil(loginlimits.login_lock_status(username=profile.user.username))

    # --- the overview's actions -------------------------------------------------------------------

    @staticmethod
    def _student(request: HttpRequest, player_id: int, permission: str) -> PlayerProfile:
        """The permission first: staff without it learn nothing, not even whether the student exists."""
        if not request.user.has_perm(permission):
            raise PermissionDenied
        return get_object_or_404(PlayerProfile.objects.select_related("user"), pk=player_id)

    def _confirm(
        self,
        request: HttpRequest,
        profile: PlayerProfile,
        *,
        title: str,
        explanation: str,
        facts: Sequence[tuple[str, object]],
        submit: str,
        run: Callable[[dict[str, Any]], None],
        form_class: type[forms.Form] | None = None,
    ) -> HttpResponse:
        """GET shows the confirmation (and the reason field, if the action has a form); a valid POST
        runs the action, which says what it did in a message, and returns to the overview."""
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        form = form_class(request.POST if request.method == "POST" else None) if form_class else None
        if request.method == "POST" and (form is None or form.is_valid()):
            run(form.cleaned_data if form is not None else {})
            return HttpResponseRedirect(reverse("admin:players_playerprofile_overview", args=[profile.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "profile": profile,
            "explanation": explanation,
            "facts": facts,
            "form": form,
            "submit": submit,
            "overview_url": reverse("admin:players_playerprofile_overview", args=[profile.pk]),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/memora/overview_action.html", context)

    @staticmethod
    def _device_facts(profile: PlayerProfile, device: AuthorizedDevice) -> list[tuple[str, object]]:
        return [
            ("Student", f"{profile.display_name} ({profile.user.username})"),
            ("Device", device.name or "(unnamed)"),
            ("Platform", device.platform or "—"),
            ("Device id", device.device_id),
            ("Last seen", device.last_seen_at),
            ("Status", device_status(device)),
        ]

    def revoke_device_view(self, request: HttpRequest, player_id: int, device_pk: int) -> HttpResponse:
        return self._device_action(
            request,
            player_id,
            device_pk,
            action=device_services.device_revoke,
            done="revoked: its session is ended, its slot is free and it cannot sign in again until it is allowed.",
            noop="was already revoked by support.",
            title="Revoke device {label}",
            explanation="Revoking the device frees its slot, ends its session at once and refuses it at sign-in "
            "until it is allowed again.",
            submit="Revoke",
            form_class=RevokeDevicesForm,
        )

    def allow_device_view(self, request: HttpRequest, player_id: int, device_pk: int) -> HttpResponse:
        return self._device_action(
            request,
            player_id,
            device_pk,
            action=device_services.device_allow,
            done="allowed again: it takes a free slot at its next sign-in.",
            noop="was not revoked by support.",
            title="Allow device {label} again",
            explanation="The device may sign in again; it takes a free slot (of the student's "
            "limit) at its next sign-in, like a new device.",
            submit="Allow again",
            form_class=AllowDeviceForm,
        )

    def _device_action(
        self,
        request: HttpRequest,
        player_id: int,
        device_pk: int,
        *,
        action: Any,
        done: str,
        noop: str,
        title: str,
        explanation: str,
        submit: str,
        form_class: Any,
    ) -> HttpResponse:
        """One support action on one device of the student: confirmation, the service, a message."""
        profile = self._student(request, player_id, SUPPORT_ACTION_PERMISSION)
        device = get_object_or_404(AuthorizedDevice, pk=device_pk, player_id=profile.pk)
        label = _device_label(device)

        def run(data: dict[str, Any]) -> None:
            if action(device_pk=device.pk, actor=_user(request), reason=data["reason"]):
                self.message_user(request, f"Device {label} of {profile.user.username} {done}", messages.SUCCESS)
            else:
                self.message_user(request, f"Device {label} {noop}", messages.WARNING)

        return self._confirm(
            request,
            profile,
            title=title.format(label=label),
            explanation=explanation,
            facts=self._device_facts(profile, device),
            submit=submit,
            run=run,
            form_class=form_class,
        )

    def end_sessions_view(self, request: HttpRequest, player_id: int) -> HttpResponse:
        profile = self._student(request, player_id, SUPPORT_ACTION_PERMISSION)

        def run(data: dict[str, Any]) -> None:
            ended = device_services.session_end_all(
                player_id=profile.pk, reason=EndReason.ENDED_BY_SUPPORT, actor=_user(request)
            )
            self.message_user(request, f"Ended {ended} live session(s) of {profile.user.username}.", messages.SUCCESS)

        live = PlayerSession.objects.filter(player_id=profile.pk, is_live=True).count()
        return self._confirm(
            request,
            profile,
            title=f"End the sessions of {profile.user.username}",
            explanation="The student is signed out on every device (“ended by support”) and signs in again "
            "with their password; their devices stay authorized.",
            facts=[("Student", f"{profile.display_name} ({profile.user.username})"), ("Live sessions", live)],
            submit="End sessions",
            run=run,
        )

    def restore_streak_view(self, request: HttpRequest, player_id: int) -> HttpResponse:
        profile = self._student(request, player_id, RESTORE_PERMISSION)
        wallet = wallet_sync.wallet_read(player_id=profile.pk, today=timezones.student_day(profile, timezone.now()))
        stored = PlayerWallet.objects.filter(player_id=profile.pk).first()
        return self._confirm(
            request,
            profile,
            title=f"Restore the streak of {profile.user.username}",
            explanation="The streak the student lost at their last break is put back (its value before the "
            "break plus the days kept since), or a lapsed streak is carried to yesterday. The restore is "
            "recorded in the student's ledger with your name and the reason.",
            facts=[
                ("Student", f"{profile.display_name} ({profile.user.username})"),
                ("Current streak", wallet["current_streak"]),
                ("Last activity day", wallet["last_activity_date"] or "—"),
                ("Lost at the last break", f"{stored.streak_lost if stored else 0} (as of the last flush)"),
            ],
            submit="Restore",
            run=lambda data: self._restore_streak_of(request, profile, data["reason"]),
            form_class=RestoreStreakForm,
        )

    def clear_login_locks_view(self, request: HttpRequest, player_id: int) -> HttpResponse:
        profile = self._student(request, player_id, SUPPORT_ACTION_PERMISSION)

        def run(data: dict[str, Any]) -> None:
            try:
                removed = device_services.login_locks_clear(player_id=profile.pk, actor=_user(request))
            except hotstate.RedisUnavailable:
                self.message_user(request, "Redis is unreachable: the locks still stand. Try again.", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Login locks of {profile.user.username} cleared ({removed} counter(s) and lock(s) removed).",
                    messages.SUCCESS,
                )

        seconds = self._lock_seconds(profile)
        return self._confirm(
            request,
            profile,
            title=f"Clear every login lock of {profile.user.username}",
            explanation="Lifts the locks and forgets the failed sign-ins of every address and device, so the "
            "student can sign in at once. Recorded in the audit with your name.",
            facts=[
                ("Student", f"{profile.display_name} ({profile.user.username})"),
                ("Username lock", f"{seconds} more second(s)" if seconds else "none (an address or device may be)"),
            ],
            submit="Clear the locks",
            run=run,
        )

    # --- the streak restore, one student at a time (the overview) or a selection (the list) -------

    def _restore_streak_of(self, request: HttpRequest, profile: PlayerProfile, reason: str) -> None:
        try:
            outcome = wallet_services.wallet_restore_streak(
                player_id=profile.pk,
                reason=reason,
                caller=f"admin:{request.user.pk}",
                idem_key=uuid.uuid4().hex,
                actor=f"admin:{request.user.get_username()}",
            )
        except ApiError as error:
            messages_ = [m for found in error.extra.get("errors", {}).values() for m in found]
            detail = "; ".join(messages_) or error.detail
            self.message_user(request, f"{profile.user.username}: {detail}", messages.WARNING)
            return
        body = outcome.body
        self.message_user(
            request,
            f"{profile.user.username}: streak restored from {body['streak_before']} to {body['streak_after']}.",
            messages.SUCCESS,
        )

    @admin.action(description="Restore the streak the last break reset (asks for a reason)", permissions=["restore"])
    def restore_streak(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        form = RestoreStreakForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            for profile in queryset.select_related("user"):
                self._restore_streak_of(request, profile, form.cleaned_data["reason"])
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
        return request.user.has_perm(RESTORE_PERMISSION)


admin.site.unregister(PlayerProfile)
admin.site.register(PlayerProfile, StudentOverviewAdmin)

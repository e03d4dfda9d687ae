"""The admin support staff use: students with their devices, sessions and audit, device
revocation, and service API keys.

Every change goes through ``devices.services`` or ``devices.servicekeys``: forms and actions here
only collect input. No page shows a session token, a token digest or a key digest; a new service
key is shown once, in the message that follows its creation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from devices import servicekeys, services
from devices.adminlogin import ThrottledAdminAuthenticationForm
from devices.models import AuthorizedDevice, DeviceAuditEntry, EndReason, PlayerSession, ServiceApiKey

# players.admin is imported first so that its student admin is registered before we replace it.
from players.admin import PlayerProfileAdmin, SupportWordsMixin
from players.models import PlayerProfile

# The admin's sign-in goes through the API login's limiter (statement 11).
admin.site.login_form = ThrottledAdminAuthenticationForm

# Support's actions on devices and on a student's sessions are all gated by this one permission:
# the Support group holds it, view-only staff do not.
SUPPORT_ACTION_PERMISSION = "devices.change_authorizeddevice"

# The student page lists the sessions of this period; the session list holds them all.
RECENT_SESSIONS = dt.timedelta(days=90)


def _actor(request: HttpRequest) -> User:
    return cast(User, request.user)


def device_status(device: AuthorizedDevice) -> str:
    if device.login_blocked:
        return "blocked"  # revoked by support: refused at login until allowed again
    if device.revoked_at is not None:
        return "revoked"  # removed or replaced: the slot is free, the device may log in again
    return "active"


def _student_link(profile: PlayerProfile) -> str:
    url = reverse("admin:players_playerprofile_change", args=[profile.pk])
    return format_html('<a href="{}">{}</a>', url, profile.user.username)


class DeviceStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("active", "active"),
            ("revoked", "revoked (slot freed)"),
            ("blocked", "blocked by support"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "active":
            return queryset.filter(revoked_at__isnull=True)
        if value == "revoked":
            return queryset.filter(revoked_at__isnull=False, login_blocked=False)
        if value == "blocked":
            return queryset.filter(login_blocked=True)
        return queryset


class SessionStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "live"), ("ended", "ended")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(is_live=True)
        if self.value() == "ended":
            return queryset.filter(is_live__isnull=True)
        return queryset


# --- read-only building blocks --------------------------------------------------------------------


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(SupportWordsMixin):
    """A list and detail pages to read; the rows are written by services only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ActionsOnlyAdmin(SupportWordsMixin):
    """Detail pages are read-only; the change permission only unlocks the list's actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- the student page -----------------------------------------------------------------------------


class StudentDeviceInline(ReadOnlyInline):
    model = AuthorizedDevice
    verbose_name_plural = "devices"
    fields = (
        "device_id",
        "name",
        "platform",
        "status",
        "authorized_at",
        "last_seen_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
    )
    readonly_fields = fields
    ordering = ("revoked_at", "-last_seen_at")

    @admin.display(description="status")
    def status(self, obj: AuthorizedDevice) -> str:
        return device_status(obj)


class StudentSessionInline(ReadOnlyInline):
    model = PlayerSession
    fk_name = "player"
    verbose_name_plural = "sessions of the last 90 days"
    # Never token_digest: no page shows a token or its digest.
    fields = ("device", "started_at", "expires_at", "last_seen_at", "ended_at", "end_reason")
    readonly_fields = fields
    ordering = ("-started_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        since = timezone.now() - RECENT_SESSIONS
        return super().get_queryset(request).select_related("device").filter(started_at__gte=since)


class StudentAuditInline(ReadOnlyInline):
    model = DeviceAuditEntry
    verbose_name_plural = "device and session audit"
    fields = ("at", "action", "device", "actor", "reason")
    readonly_fields = fields
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("device", "actor")


class StudentAdmin(PlayerProfileAdmin):
    """``players``' student admin with what ``devices`` knows about the student."""

    fields = (*PlayerProfileAdmin.fields, "lists")
    readonly_fields = fields
    inlines = (StudentDeviceInline, StudentSessionInline, StudentAuditInline)
    actions = ("end_sessions",)

    @admin.display(description="all records")
    def lists(self, obj: PlayerProfile) -> str:
        links = [
            (reverse("admin:devices_authorizeddevice_changelist"), "devices"),
            (reverse("admin:devices_playersession_changelist"), "sessions"),
            (reverse("admin:devices_deviceauditentry_changelist"), "audit"),
        ]
        return format_html_join(
            " · ", '<a href="{}?player__id__exact={}">{}</a>', ((url, obj.pk, label) for url, label in links)
        )

    @admin.action(description="End sessions of the selected students", permissions=["end_sessions"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[PlayerProfile]) -> None:
        ended = 0
        players = list(queryset.values_list("pk", flat=True))
        for player_id in players:
            ended += services.session_end_all(
                player_id=player_id, reason=EndReason.ENDED_BY_SUPPORT, actor=_actor(request)
            )
        self.message_user(request, f"Ended {ended} live session(s) of {len(players)} student(s).", messages.SUCCESS)

    def has_end_sessions_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SUPPORT_ACTION_PERMISSION)


if admin.site.is_registered(PlayerProfile):
    admin.site.unregister(PlayerProfile)
admin.site.register(PlayerProfile, StudentAdmin)


# --- authorized devices ---------------------------------------------------------------------------


class RevokeDevicesForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        required=True,
        widget=forms.TextInput(attrs={"size": 80, "autofocus": True}),
        help_text="Recorded in the student's audit with your name. At most 200 characters.",
    )


class AllowDeviceForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"size": 80, "autofocus": True}),
        help_text="Optional; recorded in the student's audit with your name. At most 200 characters.",
    )


class DeviceSessionInline(ReadOnlyInline):
    model = PlayerSession
    fk_name = "device"
    verbose_name_plural = "sessions on this device"
    fields = ("started_at", "expires_at", "last_seen_at", "ended_at", "end_reason")
    readonly_fields = fields
    ordering = ("-started_at",)
    show_change_link = False


@admin.register(AuthorizedDevice)
class AuthorizedDeviceAdmin(ActionsOnlyAdmin):
    list_display = ("student", "name", "platform", "device_id", "last_seen_at", "status")
    list_display_links = ("device_id",)
    list_select_related = ("player__user",)
    list_filter = (DeviceStatusFilter, "platform")
    search_fields = ("player__user__username", "name", "device_id")
    ordering = ("-last_seen_at", "-id")
    show_full_result_count = False
    fields = (
        "student",
        "device_id",
        "name",
        "platform",
        "status",
        "authorized_at",
        "last_seen_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
    )
    readonly_fields = fields
    inlines = (DeviceSessionInline,)
    actions = ("revoke_devices", "allow_devices")

    @admin.display(description="student", ordering="player__user__username")
    def student(self, obj: AuthorizedDevice) -> str:
        return _student_link(obj.player)

    @admin.display(description="status")
    def status(self, obj: AuthorizedDevice) -> str:
        return device_status(obj)

    @admin.action(description="Revoke selected devices (asks for a reason)", permissions=["change"])
    def revoke_devices(self, request: HttpRequest, queryset: QuerySet[AuthorizedDevice]) -> HttpResponse | None:
        form = RevokeDevicesForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            revoked = unchanged = 0
            for device_pk in queryset.values_list("pk", flat=True):
                if services.device_revoke(
                    device_pk=device_pk, actor=_actor(request), reason=form.cleaned_data["reason"]
                ):
                    revoked += 1
                else:
                    unchanged += 1
            self.message_user(
                request,
                f"Revoked {revoked} device(s): their sessions are ended and their slots free.",
                messages.SUCCESS,
            )
            if unchanged:
                self.message_user(request, f"{unchanged} device(s) were already blocked.", messages.WARNING)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke devices",
            "subtitle": None,
            "opts": self.opts,
            "devices": queryset.select_related("player__user"),
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/devices/authorizeddevice/revoke_devices.html", context)

    @admin.action(description="Allow selected devices to log in again", permissions=["change"])
    def allow_devices(self, request: HttpRequest, queryset: QuerySet[AuthorizedDevice]) -> None:
        allowed = unchanged = 0
        for device_pk in queryset.values_list("pk", flat=True):
            if services.device_allow(device_pk=device_pk, actor=_actor(request)):
                allowed += 1
            else:
                unchanged += 1
        self.message_user(
            request, f"Allowed {allowed} device(s): each takes a free slot at its next login.", messages.SUCCESS
        )
        if unchanged:
            self.message_user(request, f"{unchanged} device(s) were not blocked.", messages.WARNING)


# --- sessions and audit ---------------------------------------------------------------------------


@admin.register(PlayerSession)
class PlayerSessionAdmin(ReadOnlyAdmin):
    list_display = ("id", "student", "device", "started_at", "expires_at", "last_seen_at", "ended_at", "end_reason")
    list_select_related = ("player__user", "device")
    list_filter = (SessionStateFilter, "end_reason")
    search_fields = ("player__user__username",)
    ordering = ("-started_at", "-id")
    show_full_result_count = False
    # Never token_digest: no page shows a token or its digest.
    fields = ("student", "device", "started_at", "expires_at", "last_seen_at", "ended_at", "end_reason")
    readonly_fields = fields

    @admin.display(description="student", ordering="player__user__username")
    def student(self, obj: PlayerSession) -> str:
        return _student_link(obj.player)


@admin.register(DeviceAuditEntry)
class DeviceAuditEntryAdmin(ReadOnlyAdmin):
    list_title = "Device and session audit"
    list_display = ("at", "student", "action", "device", "actor", "reason")
    list_select_related = ("player__user", "device", "actor")
    list_filter = ("action",)
    search_fields = ("player__user__username", "actor__username", "reason")
    show_full_result_count = False
    fields = ("at", "student", "action", "device", "actor", "reason")
    readonly_fields = fields

    @admin.display(description="student", ordering="player__user__username")
    def student(self, obj: DeviceAuditEntry) -> str:
        return _student_link(obj.player)


# --- service API keys -----------------------------------------------------------------------------


class ServiceApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ServiceApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="What the calling service may do.",
    )

    class Meta:
        model = ServiceApiKey
        fields = ("name",)


@admin.register(ServiceApiKey)
class ServiceApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "key_prefix", "scope_list", "created_at", "created_by", "status")
    list_select_related = ("created_by",)
    search_fields = ("name", "prefix")
    ordering = ("-created_at",)
    actions = ("revoke_keys",)
    # Never the digest: only the public prefix identifies a key here.
    view_fields = ("name", "key_prefix", "scope_list", "created_at", "created_by", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: ServiceApiKey | None = None) -> Any:
        return ("name", "scopes") if obj is None else self.view_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ServiceApiKey | None = None) -> Any:
        return () if obj is None else self.view_fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ServiceApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False  # a key never changes; revoke it and create another
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked keys stay on record

    def save_model(self, request: HttpRequest, obj: ServiceApiKey, form: Any, change: bool) -> None:
        if change:
            raise PermissionDenied
        key, raw = servicekeys.service_key_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], actor=_actor(request)
        )
        # The service wrote the row; the admin's unsaved object becomes that row so that the log
        # entry and the redirect point at it.
        for field in ServiceApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        obj._state.db = key._state.db
        self.message_user(
            request,
            format_html(
                "The key for “{}” is <code>{}</code> — copy it now: only its digest is kept and it will "
                "not be shown again.",
                key.name,
                raw,
            ),
            messages.WARNING,
        )

    @admin.display(description="key")
    def key_prefix(self, obj: ServiceApiKey) -> str:
        return f"mks_{obj.prefix}_…"

    @admin.display(description="scopes")
    def scope_list(self, obj: ServiceApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="status")
    def status(self, obj: ServiceApiKey) -> str:
        return "active" if obj.revoked_at is None else "revoked"

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ServiceApiKey]) -> None:
        keys = list(queryset.values_list("pk", flat=True))
        for key_pk in keys:
            servicekeys.service_key_revoke(key_pk=key_pk)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)

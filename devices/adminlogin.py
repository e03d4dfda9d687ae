"""The admin's sign-in, throttled by the API login's limiter (statement 11).

Per (username, address) and per username, checked before the password is hashed: while a lock is
in force the attempt is refused (and not counted) with a form error. A browser that signed in as
that staff user within ``MEMORA_STAFF_DEVICE_COOKIE_AGE`` (30 days) carries a signed device cookie
and is held only to its own counter per (username, device), like a student's proven device, so a
stranger spraying an agent's username cannot lock the support desk out.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core import signing
from django.http import HttpRequest, HttpResponse

from core.clientip import client_address
from devices import loginlimits

COOKIE_NAME = "memora_staff_device"
_SALT = "memora.devices.staff-device"


def staff_device_cookie(*, username: str, device_id: str) -> str:
    return signing.dumps({"u": loginlimits.username_key(username), "d": device_id}, salt=_SALT)


def staff_device_from_cookie(request: HttpRequest, *, username: str) -> str | None:
    """The device id of a valid cookie that this browser got by signing in as ``username``."""
    raw = request.COOKIES.get(COOKIE_NAME)
    if not raw:
        return None
    try:
        data = signing.loads(raw, salt=_SALT, max_age=settings.MEMORA_STAFF_DEVICE_COOKIE_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("u") != loginlimits.username_key(username):
        return None
    device = data.get("d")
    try:
        return str(uuid.UUID(str(device)))
    except ValueError:
        return None


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "locked": "Too many failed sign-in attempts for this username. Try again in %(minutes)s minute(s).",
    }

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if not isinstance(username, str) or not self.cleaned_data.get("password"):
            return super().clean()
        request = self.request
        if request is None:  # not through the admin's login view: nothing to count by
            return super().clean()
        device_id = staff_device_from_cookie(request, username=username)
        scope = loginlimits.Scope(
            user_key=loginlimits.username_key(username), address=client_address(request), device_id=device_id
        )
        # Before the password is hashed; a refused attempt is not counted.
        wait = loginlimits.login_lock_wait(scope)
        if wait > 0:
            raise forms.ValidationError(
                self.error_messages["locked"], code="locked", params={"minutes": max(1, math.ceil(wait / 60))}
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            if self.user_cache is None:  # wrong username or password (not "staff only")
                loginlimits.login_failure_record(scope)
            raise
        loginlimits.login_success_record(scope)
        request.memora_staff_device = staff_device_cookie(  # type: ignore[attr-defined]
            username=username, device_id=device_id or str(uuid.uuid4())
        )
        return cleaned


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """The admin site's login view, which also hands a signed-in browser its device cookie."""
    response = admin.site.login(request, extra_context)
    cookie = getattr(request, "memora_staff_device", None)
    if cookie is not None:
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=settings.MEMORA_STAFF_DEVICE_COOKIE_AGE,
            path="/admin/",
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
    return response

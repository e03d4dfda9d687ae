from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from players.principals import PlayerPrincipal, ServicePrincipal


class IsStudent(BasePermission):
    """A verified student session (the device + session check put it on the request)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, PlayerPrincipal)


class HasServiceScope(BasePermission):
    """A service API key holding the view's ``required_scope``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return isinstance(user, ServicePrincipal) and getattr(view, "required_scope", None) in user.scopes


def current_student(request: Request) -> PlayerPrincipal:
    """The verified student of a request that passed ``IsStudent``."""
    user = request.user
    if not isinstance(user, PlayerPrincipal):
        raise TypeError("current_student() on a request without a verified student")
    return user

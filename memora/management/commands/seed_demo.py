"""``manage.py seed_demo``: the demo student and the demo support agent that `make run` prints.

Idempotent: an account that already exists is left as it is (its password is not reset). With
``--random-passwords`` (what ``make run`` uses against a real database, on request) the accounts it
creates get random passwords, printed once here and nowhere else.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from core.errors import ApiError
from players import services as player_services

STUDENT_USERNAME = "demo_student"
STUDENT_PASSWORD = "learn-every-day"
SUPPORT_USERNAME = "demo_support"
SUPPORT_PASSWORD = "help-desk-memora"
SUPPORT_GROUP = "Support"


class Command(BaseCommand):
    help = "Create the demo student and the demo support agent (staff, in the Support group) if missing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Say what would be created; change nothing.")
        parser.add_argument(
            "--random-passwords",
            action="store_true",
            help="Give the accounts created random passwords (printed once) instead of the documented demo ones.",
        )

    def handle(self, *args: Any, dry_run: bool = False, random_passwords: bool = False, **options: Any) -> None:
        student_password = secrets.token_urlsafe(12) if random_passwords else STUDENT_PASSWORD
        support_password = secrets.token_urlsafe(12) if random_passwords else SUPPORT_PASSWORD
        users = get_user_model().objects
        student_exists = users.filter(username__iexact=STUDENT_USERNAME).exists()
        support_exists = users.filter(username__iexact=SUPPORT_USERNAME).exists()
        if dry_run:
            for name, exists in ((STUDENT_USERNAME, student_exists), (SUPPORT_USERNAME, support_exists)):
                self.stdout.write(f"{name}: {'present, unchanged' if exists else 'would be created'}")
            return

        student_note = "already present, password unchanged" if student_exists else "created"
        if not student_exists:
            try:
                # The same path as POST /auth/register/, so the demo student is an ordinary one.
                player_services.player_register(
                    username=STUDENT_USERNAME, password=student_password, display_name="Demo Student", tz_name=None
                )
            except ApiError as exc:  # e.g. MEMORA_REGISTRATION_OPEN is off
                student_note = f"not created: {exc.detail}"
        support_note = "already present, password unchanged" if support_exists else "created"
        self._ensure_support_agent(create=not support_exists, password=support_password)

        # An account that was already there keeps its password, which is not ours to print.
        shown_student = "(password unchanged)" if student_exists else student_password
        shown_support = "(password unchanged)" if support_exists else support_password
        self.stdout.write(f"Demo student:       {STUDENT_USERNAME} / {shown_student}  ({student_note})")
        self.stdout.write(
            f"Demo support agent: {SUPPORT_USERNAME} / {shown_support}  ({support_note}; signs in at /admin/)"
        )

    @transaction.atomic
    def _ensure_support_agent(self, *, create: bool, password: str) -> None:
        # The Support group and its permissions come from a devices migration; get_or_create only
        # covers a database migrated before that migration existed, and never touches permissions.
        group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
        users = get_user_model().objects
        if create:
            agent = users.create_user(username=SUPPORT_USERNAME, password=password, is_staff=True)
        else:
            agent = users.get(username__iexact=SUPPORT_USERNAME)
        agent.groups.add(group)

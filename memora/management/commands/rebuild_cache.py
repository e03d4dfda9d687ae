from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from devices import services as device_services
from memora import reconciler
from players.models import PlayerProfile
from wallets import sync as wallet_sync


class Command(BaseCommand):
    help = "Reload Redis from the database: every student's sessions, devices and wallet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--player", type=int, action="append", help="Only this player id (repeatable).")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        ids = PlayerProfile.objects.order_by("pk").values_list("pk", flat=True)
        if options["player"]:
            ids = ids.filter(pk__in=options["player"])
        failed = 0
        for player_id in tqdm(ids.iterator(), total=ids.count(), disable=options["no_progress"], file=self.stderr):
            if not device_services.auth_cache_sync(player_id=player_id):
                failed += 1
                continue
            if not wallet_sync.wallet_cache_sync(player_id=player_id):
                failed += 1
        reconciler.reconcile_outbox()
        self.stdout.write(f"rebuilt {ids.count() - failed} students, {failed} failed")

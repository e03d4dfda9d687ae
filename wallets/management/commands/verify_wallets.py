from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from wallets import verification


class Command(BaseCommand):
    help = "Check every database wallet against what its ledger implies; exit 1 on drift (--fix corrects)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="Correct drifted wallets from their ledgers.")
        parser.add_argument("--player", type=int, action="append", help="Only this player id (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        drifts = verification.wallet_verify(fix=options["fix"], player_ids=options["player"])
        for d in drifts:
            self.stdout.write(f"player {d.player_id}: {d.field} is {d.wallet!r}, ledger says {d.ledger!r}")
        if not drifts:
            self.stdout.write("all wallets agree with their ledgers")
        elif options["fix"]:
            self.stdout.write(f"fixed {len({d.player_id for d in drifts})} wallets")
        else:
            raise CommandError(f"{len({d.player_id for d in drifts})} wallets drift from their ledgers")

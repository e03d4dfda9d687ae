from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from wallets import flush


class Command(BaseCommand):
    help = "Flush pending wallet events from Redis to the database now (the beat task's flush, by hand)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--player", type=int, action="append", help="Only this player id (repeatable).")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be written; write nothing.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        bar = tqdm(unit="students", disable=options["no_progress"], file=self.stderr)
        summary = flush.wallet_flush(
            player_ids=options["player"],
            dry_run=options["dry_run"],
            trigger="manual",
            progress=bar.update,
        )
        bar.close()
        verb = "would write" if options["dry_run"] else "wrote"
        self.stdout.write(
            f"{verb}: {summary.students} students, {summary.events} events, "
            f"{summary.statements} statements in {summary.chunks} chunks; "
            f"{summary.already_written} already written and {summary.duplicates} duplicates dropped, "
            f"{summary.dead_lettered} dead-lettered, {summary.dropped_deleted} of deleted students dropped"
        )

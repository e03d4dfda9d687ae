from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from core.errors import ApiError
from wallets import deadletters, fanout, flush, selectors


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


class Command(BaseCommand):
    help = (
        "Flush pending wallet events from Redis to the database now (the beat task's flush, by hand); "
        "with --dead-letters, list the events the database refused, or retry or discard one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--player", type=int, action="append", help="Only this player id (repeatable).")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be written; write nothing.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            metavar="N",
            help="Flush on N processes, each taking the next range of shards (as beat's fan-out does on N "
            "Celery workers). Default 1: one pass over every shard.",
        )
        letters = parser.add_argument_group("dead letters")
        letters.add_argument(
            "--dead-letters", action="store_true", help="List the open dead letters instead of flushing."
        )
        action = letters.add_mutually_exclusive_group()
        action.add_argument("--retry", type=int, metavar="ID", help="Write this dead letter's event into the ledger.")
        action.add_argument("--discard", type=int, metavar="ID", help="Give up on this dead letter's event.")
        letters.add_argument("--reason", help="Why the letter is discarded (required with --discard).")
        letters.add_argument("--actor", default=None, help="Who acts, for the audit (default: cli:<login name>).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dead_letters"]:
            self._dead_letters(options)
            return
        if options["retry"] is not None or options["discard"] is not None:
            raise CommandError("--retry and --discard go with --dead-letters")
        workers = options["workers"]
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if workers > 1 and options["player"]:
            raise CommandError("--workers goes without --player")
        bar = tqdm(unit="students", disable=options["no_progress"], file=self.stderr)
        if workers > 1:
            summary = fanout.wallet_flush_parallel(
                workers=workers, dry_run=options["dry_run"], trigger="manual", progress=bar.update
            )
        else:
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

    def _dead_letters(self, options: dict[str, Any]) -> None:
        actor = options["actor"] or _default_actor()
        try:
            if options["retry"] is not None:
                outcome = deadletters.dead_letter_retry(letter_id=options["retry"], actor=actor)
            elif options["discard"] is not None:
                if not (options["reason"] or "").strip():
                    raise CommandError("--discard needs --reason")
                outcome = deadletters.dead_letter_discard(
                    letter_id=options["discard"], actor=actor, reason=options["reason"]
                )
            else:
                self._list(options["player"])
                return
        except ApiError as error:
            raise CommandError(error.detail) from error
        self.stdout.write(
            f"dead letter {outcome.letter_id} of player {outcome.player_id}: {outcome.result}"
            + (f" ({outcome.detail})" if outcome.detail else "")
        )

    def _list(self, player_ids: list[int] | None) -> None:
        letters = selectors.dead_letter_list_open(player_ids=player_ids)
        for d in letters:
            what = f"{d.kind} +{d.amount}" if d.kind is not None else "undecodable"
            error = d.error.replace("\n", " ")
            self.stdout.write(f"{d.id}\tplayer {d.player_id}\t{d.event_id}\t{what}\tage {d.age_s}s\t{error[:200]}")
        self.stdout.write(f"{len(letters)} open dead letters")

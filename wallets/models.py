from __future__ import annotations

import uuid
from typing import Any

from django.db import models

from players.models import PlayerProfile

# Bytes of the idempotency key digest the ledger keeps (128 bits of SHA-256): it names a request.
DIGEST_BYTES = 16
# Bytes of the fingerprint digest the ledger keeps (64 bits): it only tells, under a key already
# found, whether a retry is the same request; a different body passing for the same one needs a
# 2^-64 chance on a key the client itself reused.
FP_DIGEST_BYTES = 8


class DigestField(models.BinaryField):
    """A fixed-size binary digest: ``BINARY(n)`` on MariaDB (indexable, compared byte for byte),
    a blob elsewhere."""

    def __init__(self, *args: Any, length: int = DIGEST_BYTES, **kwargs: Any) -> None:
        self.length = length
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs["length"] = self.length
        kwargs.pop("editable", None)
        return name, path, args, kwargs

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "mysql":
            return f"binary({self.length})"
        return super().db_type(connection) or "blob"


class ExactCharField(models.CharField):
    """An identifier compared exactly: MariaDB's default collation ignores case (and trailing
    spaces), Redis does not; a binary collation makes both agree. ASCII only (the patterns allow
    nothing else)."""

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "mysql":
            return f"varchar({self.max_length}) CHARACTER SET ascii COLLATE ascii_bin"
        return super().db_type(connection) or f"varchar({self.max_length})"


# The one-byte codes of the event kinds in the ledger: fixed for good (a code, once written, keeps
# its meaning; a new kind takes a new code).
EVENT_KIND_CODES: dict[str, int] = {
    "lesson": 1,
    "service": 2,
    "freeze_earned": 3,
    "freeze_used": 4,
    "streak_restored": 5,
}
EVENT_KIND_NAMES: dict[int, str] = {code: name for name, code in EVENT_KIND_CODES.items()}


class KindField(models.CharField):
    """An event's kind: ``EventKind``'s strings in Python (choices, filters, the admin, the API),
    a one-byte code in the table (``TINYINT UNSIGNED`` on MariaDB). Callers never see the code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(*args, **kwargs)

    def db_type(self, connection: Any) -> str:
        return "tinyint unsigned" if connection.vendor == "mysql" else "smallint"

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None:
            return None
        try:
            return EVENT_KIND_CODES[str(value)]
        except KeyError:
            raise ValueError(f"unknown event kind {value!r}") from None

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else EVENT_KIND_NAMES[int(value)]

    def to_python(self, value: Any) -> Any:
        if isinstance(value, int):
            return EVENT_KIND_NAMES[value]
        return super().to_python(value)


class PlayerWallet(models.Model):
    """What the ledger implies for one student, as written by the flush (or the database path).

    ``version`` is the wallet version of the newest event applied to the streak fields;
    ``generation`` grows with every database-first change, so a stale Redis copy never wins.
    """

    player = models.OneToOneField(PlayerProfile, on_delete=models.CASCADE, primary_key=True, related_name="wallet")
    xp_total = models.BigIntegerField(default=0)
    current_streak = models.IntegerField(default=0)
    longest_streak = models.IntegerField(default=0)
    last_activity_date = models.DateField(null=True, blank=True)
    streak_freezes = models.IntegerField(default=0)
    # The streak the last break reset, which support may restore; 0 when there is none (its
    # column keeps the first name, like every stored name in wallets.wallethash.WALLET_HASH_FIELDS).
    streak_lost = models.IntegerField(default=0, db_column="streak_before_break")
    # (applied_generation, version): the newest event applied to the streak fields, in the
    # (generation, version) order every event carries. An event at or below it may already be in
    # the ledger (a rollback or a stalled flusher hands it out again); one above it is new.
    version = models.BigIntegerField(default=0)
    applied_generation = models.BigIntegerField(default=0)
    generation = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "wallet"
        constraints = [
            models.CheckConstraint(condition=models.Q(xp_total__gte=0), name="wallet_xp_nonnegative"),
            models.CheckConstraint(condition=models.Q(current_streak__gte=0), name="wallet_streak_nonnegative"),
            models.CheckConstraint(
                condition=models.Q(longest_streak__gte=models.F("current_streak")), name="wallet_longest_ge_current"
            ),
            models.CheckConstraint(condition=models.Q(streak_freezes__gte=0), name="wallet_freezes_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"wallet of player {self.player_id}"


class EventKind(models.TextChoices):
    LESSON = "lesson", "lesson completed"
    SERVICE = "service", "service award"
    FREEZE_EARNED = "freeze_earned", "streak freeze earned"
    FREEZE_USED = "freeze_used", "streak freeze used"
    STREAK_RESTORED = "streak_restored", "streak restored"


class LedgerEvent(models.Model):
    """One accepted event, append-only, in a narrow row: what the truth and a rebuilt replay need.

    The clustered key is a BIGINT (a random UUID primary key made bulk inserts 3x slower once the
    table outgrew the buffer pool; an INT would run out after about 12 years at a million events a
    day). The history index (student, accepted time, event id) serves three of the four lookups:
    the history; an event by id, since every reader of an id (the flush, the cold rebuild, a
    dead-letter retry) holds the event and therefore its student and time; and a key digest, which
    is always looked up among one student's requests younger than the idempotency TTL (the digest
    is read from those rows). Unique, it keeps the same event from being written twice.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="ledger")
    kind = KindField(choices=EventKind.choices)
    amount = models.IntegerField()
    # NULL, not "": the API shows null for an event without a lesson or a reason.
    lesson_id = ExactCharField(max_length=64, null=True, blank=True)
    reason = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    accepted_at = models.DateTimeField()
    local_day = models.DateField()
    # Digests of the request's (scope, key) and of its fingerprint, never the raw key: a client's key
    # never exceeds a column and case always counts. Every event of one request (a lesson and the
    # freezes it used or earned) carries the request's key digest. Not unique, and not indexed: a
    # key older than the idempotency TTL is a new request; the writers, holding the wallet row
    # lock, look it up among the student's rows younger than the TTL (the history index).
    idem_digest = DigestField(null=True, blank=True)
    fp_digest = DigestField(null=True, blank=True, length=FP_DIGEST_BYTES)
    # The wallet after the event, in the (generation, version) order; with `capped` and the day's
    # lesson XP a replay's body is rebuilt from the row. INT: both count one student's changes
    # (a generation per database-first change, a version per event), which stay far below 2^31;
    # the XP total stays a BIGINT like the wallet's, so that any wallet the table holds has a row.
    generation = models.IntegerField(default=0)
    version = models.IntegerField()
    xp_total_after = models.BigIntegerField()
    xp_day_after = models.IntegerField(default=0)
    capped = models.BooleanField(default=False)
    streak_after = models.IntegerField()
    longest_after = models.IntegerField()
    last_day_after = models.DateField(null=True, blank=True)
    freezes_after = models.IntegerField(default=0)
    streak_lost_after = models.IntegerField(default=0, db_column="break_after")
    # A streak restore's answer shows the streak before it.
    streak_before = models.IntegerField(null=True, blank=True)
    # Who made a manual change (a streak restore): "service:<key name>" or "admin:<username>";
    # NULL for the others (no length byte in the row).
    actor = models.CharField(max_length=160, null=True, blank=True)  # noqa: DJ001

    class Meta:
        verbose_name = "ledger event"
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="ledger_amount_nonnegative"),
            # History (newest first) and every lookup of an event by id; unique, so the same
            # event cannot be written twice whatever a writer's lookups missed.
            models.UniqueConstraint(fields=["player", "accepted_at", "event_id"], name="ledger_player_accepted"),
        ]
        indexes = [
            # The day's lessons (the cap, same-day repeats): a student's rows of one day are few,
            # so the kind is read from the row, not kept in the index.
            models.Index(fields=["player", "local_day"], name="ledger_player_day"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} +{self.amount} for player {self.player_id}"


class WalletOutbox(models.Model):
    """A student whose Redis wallet must be rebuilt after a database-first change."""

    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="+")
    generation = models.BigIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "wallet outbox entry"
        verbose_name_plural = "wallet outbox"
        indexes = [models.Index(fields=["player", "generation"], name="walletoutbox_player_gen")]

    def __str__(self) -> str:
        return f"rebuild wallet of player {self.player_id} (generation {self.generation})"


class FlushRun(models.Model):
    """One completed flush: for /status, /metrics and the operator."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    students = models.IntegerField(default=0)
    events = models.IntegerField(default=0)
    set_aside = models.IntegerField(default=0)
    statements = models.IntegerField(default=0)
    trigger = models.CharField(max_length=16, default="beat")

    class Meta:
        indexes = [models.Index(fields=["finished_at"], name="flushrun_finished")]

    def __str__(self) -> str:
        return f"flush at {self.finished_at:%Y-%m-%d %H:%M:%S}: {self.events} events"


class DeadLetter(models.Model):
    """An accepted event the database refused (in the database: a Redis rollback must not lose
    it). It counts as accepted until support retries it into the ledger or discards it."""

    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="+")
    event_id = models.UUIDField(unique=True)
    payload = models.TextField()  # the event as the award script wrote it
    error = models.TextField()
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=16, blank=True, default="")  # "retried" or "discarded"
    resolved_by = models.CharField(max_length=160, blank=True, default="")
    # Why it was discarded (support's words), or what a retry found (already in the ledger).
    resolution_reason = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "dead letter"
        indexes = [models.Index(fields=["player", "resolved_at"], name="deadletter_player_open")]

    def __str__(self) -> str:
        return f"dead letter {self.event_id} of player {self.player_id}"

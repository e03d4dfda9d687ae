from __future__ import annotations

import uuid

from django.db import models

from players.models import PlayerProfile


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
    # The streak the last break reset, which support may restore; 0 when there is none.
    streak_before_break = models.IntegerField(default=0)
    version = models.BigIntegerField(default=0)
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
    """One accepted event, append-only. The clustered key is a BIGINT (a random UUID primary key
    made bulk inserts 3x slower once the table outgrew the buffer pool); ``event_id`` is unique."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    player = models.ForeignKey(PlayerProfile, on_delete=models.CASCADE, related_name="ledger")
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    amount = models.IntegerField()
    # NULL, not "": the API shows null for an event without a lesson or a reason, and the
    # idempotency pair below must not collide for events that carry no key.
    lesson_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    reason = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    accepted_at = models.DateTimeField()
    local_day = models.DateField()
    # The idempotency key and what it answered, so that the database path and the Redis path
    # can never both count one request.
    idem_scope = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    idem_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    fingerprint = models.CharField(max_length=64, blank=True, default="")
    response_status = models.SmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    # The wallet after the event.
    version = models.BigIntegerField()
    xp_total_after = models.BigIntegerField()
    streak_after = models.IntegerField()
    longest_after = models.IntegerField()
    last_day_after = models.DateField(null=True, blank=True)
    freezes_after = models.IntegerField(default=0)
    break_after = models.IntegerField(default=0)
    # Who made a manual change (a streak restore): "service:<key name>" or "admin:<username>".
    actor = models.CharField(max_length=160, blank=True, default="")
    source = models.CharField(max_length=8, default="redis")
    flushed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "ledger event"
        constraints = [
            models.UniqueConstraint(fields=["idem_scope", "idem_key"], name="ledger_idempotency_unique"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="ledger_amount_nonnegative"),
        ]
        indexes = [
            models.Index(fields=["player", "accepted_at", "event_id"], name="ledger_player_accepted"),
            models.Index(fields=["player", "local_day", "kind"], name="ledger_player_day"),
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

"""Database wallets against what their ledgers imply (`manage.py verify_wallets`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from wallets import sync
from wallets.models import LedgerEvent, PlayerWallet, WalletOutbox


@dataclass(frozen=True)
class Drift:
    player_id: int
    field: str
    wallet: Any
    ledger: Any


def _expected(player_id: int, *, total: int | None = None) -> dict[str, Any]:
    """What the student's ledger implies for their wallet row."""
    if total is None:
        total = LedgerEvent.objects.filter(player_id=player_id).aggregate(s=Sum("amount"))["s"]
    expected: dict[str, Any] = {"xp_total": int(total or 0)}
    newest = LedgerEvent.objects.filter(player_id=player_id).order_by("-generation", "-version", "-id").first()
    if newest is not None:
        expected.update(
            current_streak=newest.streak_after,
            last_activity_date=newest.last_day_after,
            streak_freezes=newest.freezes_after,
            streak_lost=newest.streak_lost_after,
        )
    return expected


def _drifts(wallet: PlayerWallet, expected: dict[str, Any]) -> list[Drift]:
    return [
        Drift(wallet.player_id, name, getattr(wallet, name), value)
        for name, value in expected.items()
        if getattr(wallet, name) != value
    ]


def wallet_verify(*, fix: bool = False, player_ids: list[int] | None = None) -> list[Drift]:
    """Database wallets against what their ledgers imply; with ``fix``, correct them. A drift is
    recomputed and fixed inside the transaction that holds the wallet row lock, so a flush that
    commits between the first reads and the fix cannot be undone by an old total."""
    drifts: list[Drift] = []
    wallets = PlayerWallet.objects.all().order_by("player_id")
    if player_ids:
        wallets = wallets.filter(player_id__in=player_ids)
    totals = dict(
        LedgerEvent.objects.values("player_id").annotate(total=Sum("amount")).values_list("player_id", "total")
    )
    for wallet in wallets.iterator(chunk_size=2000):
        found = _drifts(wallet, _expected(wallet.player_id, total=int(totals.get(wallet.player_id) or 0)))
        if found and fix:
            with transaction.atomic():
                locked = PlayerWallet.objects.select_for_update().get(pk=wallet.pk)
                found = _drifts(locked, _expected(wallet.player_id))
                if found:
                    for drift in found:
                        setattr(locked, drift.field, drift.ledger)
                    locked.longest_streak = max(locked.longest_streak, locked.current_streak)
                    locked.generation += 1
                    locked.save()
                    WalletOutbox.objects.create(
                        player_id=wallet.player_id, generation=locked.generation, created_at=timezone.now()
                    )
                    pid = wallet.player_id
                    transaction.on_commit(lambda pid=pid: sync.wallet_cache_sync(player_id=pid))  # type: ignore[misc]
        drifts += found
    return drifts

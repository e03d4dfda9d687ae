"""Every change to wallets: awards (Redis fast path and database path), cache rebuilds, the flush.

Fast path: one Lua call per award, no database connection. Database path (Redis certainly did
not run the award): ledger + wallet in one transaction, the idempotency key unique in the ledger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from memora_project import hotstate, metrics, ratelimit
from memora_project.errors import ApiError, rate_limited, service_unavailable
from players import timezones
from players.models import PlayerProfile
from wallets import cache, rules
from wallets.idempotency import key_digest
from wallets.models import EventKind, FlushRun, LedgerEvent, PlayerWallet, WalletOutbox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AwardRequest:
    player_id: int
    kind: str  # "lesson", "service" or "restore"
    base_amount: int
    local_day: dt.date
    idem_scope: str
    idem_key: str
    fingerprint: str
    lesson_id: str | None = None
    reason: str | None = None
    rate_limit: tuple[int, int] | None = None
    # (completions per local day, seconds until the local day ends): past it, 429, nothing written.
    daily_limit: tuple[int, float] | None = None
    actor: str = ""


@dataclass(frozen=True)
class AwardOutcome:
    status: int
    body: dict[str, Any]
    replayed: bool
    path: str


def _reused() -> ApiError:
    return ApiError("idempotency_key_reused", "This Idempotency-Key was used for a different request.", status=422)


def _nothing_to_restore() -> ApiError:
    return ApiError(
        "validation_error",
        "Some fields are invalid.",
        status=400,
        errors={"player": ["This student has no broken streak to restore."]},
    )


def local_day_for(*, profile: PlayerProfile, at: dt.datetime) -> dt.date:
    tz = timezones.effective(profile.timezone, profile.timezone_pending, profile.timezone_effective_at, at)
    return timezones.local_day(at, tz)


# --- awards ---------------------------------------------------------------------------------------


def wallet_award(*, request: AwardRequest) -> AwardOutcome:
    """Accept one award (or a streak restore): Redis first; the database only when Redis certainly
    did not run it."""
    now = time.time()
    event_id = str(uuid.uuid4())
    # Ids for the freeze events one call may add: up to the freezes held, plus one earned.
    spare_ids = ",".join(str(uuid.uuid4()) for _ in range(settings.MEMORA_STREAK_FREEZE_MAX + 1))
    limit, window = request.rate_limit or (0, 1)
    daily_per_day, daily_retry = request.daily_limit or (0, 0.0)
    args = [
        repr(now),
        request.local_day.isoformat(),
        request.local_day.toordinal(),
        request.kind,
        request.lesson_id or "",
        request.base_amount,
        settings.MEMORA_XP_DAILY_CAP,
        request.fingerprint,
        event_id,
        limit,
        window * 1000,
        settings.MEMORA_IDEMPOTENCY_TTL * 1000,
        request.player_id,
        request.reason or "",
        request.idem_scope,
        request.idem_key,
        settings.MEMORA_STREAK_FREEZE_EVERY,
        settings.MEMORA_STREAK_FREEZE_MAX,
        spare_ids,
        request.actor,
        daily_per_day,
        int(daily_retry * 1000),
    ]
    try:
        for _attempt in range(3):
            result = cache.award(
                pid=request.player_id, idem_digest=key_digest(request.idem_scope, request.idem_key), args=args
            )
            if result[0] != "cold":
                break
            wallet_cache_rebuild(player_id=request.player_id)
        else:
            raise service_unavailable(1)
    except hotstate.RedisUnavailable as exc:
        if not exc.certainly_not_run:
            # Sent, maybe run: the client's retry with the same key settles it.
            raise service_unavailable(1) from exc
        with _key_in_flight(key_digest(request.idem_scope, request.idem_key)):
            return _award_database(request=request, event_id=event_id)
    status = result[0]
    if status == "ok":
        metrics.AWARDS_CACHE.inc()
        return AwardOutcome(201, json.loads(result[1]), replayed=False, path="cache")
    if status == "replay":
        return AwardOutcome(int(result[1]), json.loads(result[2]), replayed=True, path="cache")
    if status == "conflict":
        raise _reused()
    if status == "limited":
        raise rate_limited(int(result[1]) / 1000.0, scope="lessons_player")
    if status == "nothing":
        raise _nothing_to_restore()
    raise RuntimeError(f"unexpected award result {status!r}")


def _streak_of(wallet: PlayerWallet) -> rules.Streak:
    return rules.Streak(
        wallet.current_streak,
        wallet.longest_streak,
        wallet.last_activity_date,
        wallet.streak_freezes,
        wallet.streak_before_break,
    )


def _set_streak(wallet: PlayerWallet, streak: rules.Streak) -> None:
    wallet.current_streak = streak.current
    wallet.longest_streak = streak.longest
    wallet.last_activity_date = streak.last_day
    wallet.streak_freezes = streak.freezes
    wallet.streak_before_break = streak.lost


def _wallet_view(*, xp_total: int, xp_today: int, streak: rules.Streak, today: dt.date) -> dict[str, Any]:
    """The wallet body of the API, from either copy (Redis or the database)."""
    last = streak.last_day
    return {
        "xp_total": xp_total,
        "xp_today": xp_today,
        "current_streak": rules.streak_shown(streak, today),
        "longest_streak": streak.longest,
        "last_activity_date": last.isoformat() if last else None,
        "today": today.isoformat(),
        "streak_active_today": last is not None and last >= today,
        "streak_freezes": streak.freezes,
    }


def _wallet_body(wallet: PlayerWallet, *, today: dt.date, xp_today: int) -> dict[str, Any]:
    return _wallet_view(xp_total=wallet.xp_total, xp_today=xp_today, streak=_streak_of(wallet), today=today)


def _lesson_xp_today(*, player_id: int, day: dt.date) -> int:
    total = LedgerEvent.objects.filter(player_id=player_id, local_day=day, kind=EventKind.LESSON).aggregate(
        s=Sum("amount")
    )["s"]
    return int(total or 0)


def _replay_from_ledger(request: AwardRequest) -> AwardOutcome | None:
    previous = LedgerEvent.objects.filter(idem_scope=request.idem_scope, idem_key=request.idem_key).first()
    if previous is None:
        return None
    if previous.fingerprint != request.fingerprint:
        raise _reused()
    return AwardOutcome(previous.response_status or 201, previous.response_body or {}, replayed=True, path="database")


@contextlib.contextmanager
def _key_in_flight(digest: str) -> Iterator[None]:
    """On the database path, a second request with a key whose first request is still running
    answers 409 (a MariaDB named lock; on the Redis path one Lua call leaves no such window)."""
    if connection.vendor != "mysql":
        yield
        return
    name = f"memora-idem-{digest}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
        (acquired,) = cursor.fetchone()
    if acquired != 1:
        raise ApiError(
            "idempotency_in_progress", "The first request with this Idempotency-Key is still running.", status=409
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])


@transaction.atomic
def _award_database(*, request: AwardRequest, event_id: str) -> AwardOutcome:
    """Redis is away: judge the award from the database alone (pending Redis events are out of reach)."""
    now = timezone.now()
    if request.rate_limit:
        limit, window = request.rate_limit
        verdict = ratelimit.local.hit(f"lesson:{request.player_id}", limit, window)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after, scope="lessons_player")
    PlayerWallet.objects.get_or_create(player_id=request.player_id)
    wallet = PlayerWallet.objects.select_for_update().get(player_id=request.player_id)
    replay = _replay_from_ledger(request)
    if replay is not None:
        return replay
    if request.daily_limit and request.kind == EventKind.LESSON:
        per_day, retry = request.daily_limit
        done = LedgerEvent.objects.filter(
            player_id=request.player_id, local_day=request.local_day, kind=EventKind.LESSON
        ).count()
        if done >= per_day:
            raise rate_limited(retry, scope="lessons_per_day")
    today = request.local_day
    amount = request.base_amount
    capped = False
    before = rules.streak_shown(_streak_of(wallet), today)
    rows: list[LedgerEvent] = []

    def add(kind: str, amount: int, day: dt.date, key: str, **extra: Any) -> LedgerEvent:
        wallet.version += 1
        row = LedgerEvent(
            event_id=uuid.UUID(extra.pop("event_id")) if "event_id" in extra else uuid.uuid4(),
            player_id=request.player_id,
            kind=kind,
            amount=amount,
            accepted_at=now + dt.timedelta(microseconds=len(rows)),
            local_day=day,
            idem_scope=request.idem_scope,
            idem_key=key,
            fingerprint=request.fingerprint,
            version=wallet.version,
            xp_total_after=wallet.xp_total,
            streak_after=wallet.current_streak,
            longest_after=wallet.longest_streak,
            last_day_after=wallet.last_activity_date,
            freezes_after=wallet.streak_freezes,
            break_after=wallet.streak_before_break,
            actor=request.actor,
            source="database",
            **extra,
        )
        rows.append(row)
        return row

    if request.kind == EventKind.LESSON:
        activity = rules.streak_after_activity(
            _streak_of(wallet),
            today,
            every=settings.MEMORA_STREAK_FREEZE_EVERY,
            max_freezes=settings.MEMORA_STREAK_FREEZE_MAX,
        )
        day = activity.day
        new_day = wallet.last_activity_date is None or today > wallet.last_activity_date
        for i, frozen in enumerate(activity.frozen_days, start=1):
            wallet.streak_freezes -= 1
            wallet.last_activity_date = frozen
            add(EventKind.FREEZE_USED, 0, frozen, f"{request.idem_key}#freeze_used:{i}")
        repeat = (not new_day) and LedgerEvent.objects.filter(
            player_id=request.player_id, local_day=day, kind=EventKind.LESSON, lesson_id=request.lesson_id
        ).exists()
        award = rules.apply_cap(
            base=amount,
            earned_today=0 if new_day else _lesson_xp_today(player_id=request.player_id, day=day),
            repeat=repeat,
            cap=settings.MEMORA_XP_DAILY_CAP,
        )
        amount, capped = award.amount, award.capped
        wallet.xp_total += amount
        final = activity.streak
        _set_streak(wallet, replace(final, freezes=final.freezes - (1 if activity.freeze_earned else 0)))
        main = add(EventKind.LESSON, amount, day, request.idem_key, event_id=event_id, lesson_id=request.lesson_id)
        if activity.freeze_earned:
            _set_streak(wallet, final)
            add(EventKind.FREEZE_EARNED, 0, day, f"{request.idem_key}#freeze_earned")
    elif request.kind == "restore":
        restored = rules.streak_restore(_streak_of(wallet), today)
        if restored is None:
            raise _nothing_to_restore()
        _set_streak(wallet, restored)
        main = add(EventKind.STREAK_RESTORED, 0, today, request.idem_key, event_id=event_id)
    else:
        wallet.xp_total += amount
        main = add(request.kind, amount, today, request.idem_key, event_id=event_id)
    main.reason = request.reason
    xp_today = 0
    if wallet.last_activity_date is not None and wallet.last_activity_date >= today:
        xp_today = _lesson_xp_today(player_id=request.player_id, day=wallet.last_activity_date) + (
            amount if request.kind == EventKind.LESSON else 0
        )
    body: dict[str, Any] = {"event_id": event_id}
    if request.kind == "restore":
        body.update(kind=EventKind.STREAK_RESTORED, streak_before=before)
        body["streak_after"] = rules.streak_shown(_streak_of(wallet), today)
    else:
        body["xp_awarded"] = amount
        if request.kind == EventKind.LESSON:
            body["capped"] = capped
    body["wallet"] = _wallet_body(wallet, today=today, xp_today=xp_today)
    main.response_status = 201
    main.response_body = body
    wallet.generation += 1
    try:
        with transaction.atomic():
            LedgerEvent.objects.bulk_create(rows)
    except IntegrityError:
        # The same key committed meanwhile on another path: answer as its replay.
        replay = _replay_from_ledger(request)
        if replay is None:
            raise
        return replay
    wallet.save()
    WalletOutbox.objects.create(player_id=request.player_id, generation=wallet.generation, created_at=now)
    transaction.on_commit(lambda: wallet_cache_sync(player_id=request.player_id))
    transaction.on_commit(metrics.AWARDS_DATABASE.inc)
    return AwardOutcome(201, body, replayed=False, path="database")


# --- reading and rebuilding the Redis copy --------------------------------------------------------


def wallet_cache_sync(*, player_id: int) -> bool:
    """Rebuild the student's Redis wallet after a database-first change; True once Redis holds it."""
    try:
        wallet_cache_rebuild(player_id=player_id, force=True)
    except hotstate.RedisUnavailable:
        return False
    WalletOutbox.objects.filter(player_id=player_id).delete()
    return True


def wallet_cache_rebuild(*, player_id: int, force: bool = False) -> None:
    """Load the wallet into Redis from the database plus the events still pending in Redis.

    Redis is read first and the ledger second, so an event flushed in between is counted once.
    Raises RedisUnavailable.
    """
    for _attempt in range(5):
        version, unflushed = cache.read_unflushed(player_id)
        if version is not None and not force:
            return
        profile = PlayerProfile.objects.get(pk=player_id)
        wallet = PlayerWallet.objects.filter(player_id=player_id).first() or PlayerWallet(player_id=player_id)
        flushed_ids = set(
            LedgerEvent.objects.filter(event_id__in=[uuid.UUID(e["event_id"]) for e in unflushed]).values_list(
                "event_id", flat=True
            )
        )
        pending = [e for e in unflushed if uuid.UUID(e["event_id"]) not in flushed_ids]
        now = timezone.now()
        today = local_day_for(profile=profile, at=now)
        xp_total = wallet.xp_total + sum(int(e["amount"]) for e in pending)
        state: dict[str, Any] = {
            "streak": wallet.current_streak,
            "longest": wallet.longest_streak,
            "last": wallet.last_activity_date,
            "freezes": wallet.streak_freezes,
            "brk": wallet.streak_before_break,
            "ver": wallet.version,
        }
        newest = max(pending, key=lambda e: int(e["version"]), default=None)
        if newest is not None and int(newest["version"]) > wallet.version:
            state.update(
                streak=int(newest["streak_after"]),
                longest=int(newest["longest_after"]),
                last=dt.date.fromisoformat(newest["last_day_after"]) if newest["last_day_after"] else None,
                freezes=int(newest["freezes_after"]),
                brk=int(newest.get("break_after") or 0),
                ver=int(newest["version"]),
            )
        versions = [int(e["version"]) for e in unflushed]
        state["ver"] = max([state["ver"], wallet.version, *versions])
        last: dt.date | None = state["last"]
        # Today's XP and lessons belong to the last activity day (the only day still open).
        open_day = last or today
        day_rows = LedgerEvent.objects.filter(player_id=player_id, local_day=open_day, kind=EventKind.LESSON)
        lessons = {row.lesson_id for row in day_rows if row.lesson_id}
        xp_today = sum(row.amount for row in day_rows)
        for e in pending:
            if e["kind"] == EventKind.LESSON and e["local_day"] == open_day.isoformat():
                xp_today += int(e["amount"])
                if e["lesson_id"]:
                    lessons.add(e["lesson_id"])
        fields = {
            "xp": str(xp_total),
            "streak": str(state["streak"]),
            "longest": str(state["longest"]),
            "last": str(last.toordinal()) if last else "",
            "lastd": last.isoformat() if last else "",
            "freezes": str(state["freezes"]),
            "brk": str(state["brk"]),
            "ver": str(state["ver"]),
            "day": open_day.isoformat(),
            "xpd": str(xp_today),
        }
        cutoff = now - dt.timedelta(seconds=settings.MEMORA_IDEMPOTENCY_TTL)
        records: dict[str, str] = {}
        for row in LedgerEvent.objects.filter(
            player_id=player_id, accepted_at__gte=cutoff, idem_key__isnull=False
        ).only("idem_scope", "idem_key", "fingerprint", "response_status", "response_body"):
            records[key_digest(row.idem_scope or "", row.idem_key or "")] = json.dumps(
                {"fp": row.fingerprint, "status": row.response_status or 201, "body": json.dumps(row.response_body)}
            )
        written = cache.rebuild(
            pid=player_id,
            generation=wallet.generation,
            expected_version=version,
            fields=fields,
            lessons=sorted(lessons),
            idem_records=records,
            idem_ttl_ms=settings.MEMORA_IDEMPOTENCY_TTL * 1000,
        )
        if written >= 0:
            return
    raise hotstate.RedisUnavailable("wallet kept changing during the rebuild", certainly_not_run=True)


def wallet_read(*, player_id: int, today: dt.date) -> dict[str, Any]:
    """The wallet as the student sees it: Redis on a warm cache, rebuilt on a cold one, the
    database when Redis is away."""
    try:
        data = cache.read_wallet(player_id)
        if data is None:
            wallet_cache_rebuild(player_id=player_id)
            data = cache.read_wallet(player_id)
    except hotstate.RedisUnavailable:
        data = None
    if data is None:
        wallet = PlayerWallet.objects.filter(player_id=player_id).first() or PlayerWallet(player_id=player_id)
        last_day = wallet.last_activity_date
        xp_today = _lesson_xp_today(player_id=player_id, day=last_day) if last_day and last_day >= today else 0
        return _wallet_body(wallet, today=today, xp_today=xp_today)
    last = dt.date.fromordinal(int(data["last"])) if data["last"] else None
    streak = rules.Streak(
        int(data["streak"] or 0), int(data["longest"] or 0), last, int(data["freezes"] or 0), int(data["brk"] or 0)
    )
    xp_today = int(data["xpd"] or 0) if data["day"] == today.isoformat() else 0
    return _wallet_view(xp_total=int(data["xp"] or 0), xp_today=xp_today, streak=streak, today=today)


# --- the flush ------------------------------------------------------------------------------------


@dataclass
class FlushSummary:
    students: int = 0
    events: int = 0
    duplicates: int = 0
    set_aside: int = 0
    statements: int = 0
    chunks: int = 0
    set_aside_players: list[int] = field(default_factory=list)
    redis_unavailable: bool = False
    # Students whose Redis wallet must be rebuilt once their claims are released.
    rebuild_players: list[int] = field(default_factory=list)


# The ledger columns the flush writes, in order (every concrete field but the BIGINT key).
_LEDGER_FIELDS = [f for f in LedgerEvent._meta.concrete_fields if f.name != "id"]
_WALLET_COLUMNS = (
    "player_id",
    "xp_total",
    "current_streak",
    "longest_streak",
    "last_activity_date",
    "streak_freezes",
    "streak_before_break",
    "version",
    "generation",
    "created_at",
    "updated_at",
)
_LIMITS = {"lesson_id": 64, "reason": 200, "idem_scope": 128, "idem_key": 255, "actor": 160}


@dataclass(frozen=True)
class _Event:
    """One claimed event, decoded and checked, as the row the ledger receives."""

    event_id: str
    amount: int
    version: int
    idem: bool
    streak: tuple[int, int, dt.date | None, int, int]  # current, longest, last day, freezes, lost
    row: tuple[Any, ...]


def _sql_datetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _decode(player_id: int, raw: bytes | str, *, native_uuid: bool, now: str) -> _Event:
    """Straight from the award script's JSON to a ledger row: no model instance per event (the
    flush writes a million of them). Raises ValueError, KeyError or TypeError on a bad event."""
    e = json.loads(raw)
    event_id = uuid.UUID(e["event_id"])
    accepted = dt.datetime.fromtimestamp(float(e["accepted_at"]), tz=dt.UTC)
    last_day = dt.date.fromisoformat(e["last_day_after"]) if e.get("last_day_after") else None
    values: dict[str, Any] = {
        "event_id": str(event_id) if native_uuid else event_id.hex,
        "player": player_id,
        "kind": EventKind(e["kind"]).value,
        "amount": int(e["amount"]),
        "lesson_id": e.get("lesson_id") or None,
        "reason": e.get("reason") or None,
        "accepted_at": _sql_datetime(accepted),
        "local_day": dt.date.fromisoformat(e["local_day"]).isoformat(),
        "idem_scope": e.get("idem_scope") or None,
        "idem_key": e.get("idem_key") or None,
        "fingerprint": str(e.get("fingerprint") or "")[:64],
        "response_status": int(e.get("status") or 201),
        "response_body": e.get("body") or None,  # JSON written by cjson in the award script
        "version": int(e["version"]),
        "xp_total_after": int(e["xp_total_after"]),
        "streak_after": int(e["streak_after"]),
        "longest_after": int(e["longest_after"]),
        "last_day_after": last_day.isoformat() if last_day else None,
        "freezes_after": int(e.get("freezes_after") or 0),
        "break_after": int(e.get("break_after") or 0),
        "actor": e.get("actor") or "",
        "source": "redis",
        "flushed_at": now,
    }
    for name, limit in _LIMITS.items():
        if values[name] is not None and len(values[name]) > limit:
            raise ValueError(f"{name} longer than {limit}")
    if values["amount"] < 0:
        raise ValueError("negative amount")
    return _Event(
        event_id=str(event_id),
        amount=values["amount"],
        version=values["version"],
        idem=values["idem_key"] is not None,
        streak=(
            values["streak_after"],
            values["longest_after"],
            last_day,
            values["freezes_after"],
            values["break_after"],
        ),
        row=tuple(values[f.name] for f in _LEDGER_FIELDS),
    )


def _write_chunk(claimed: dict[int, cache.Claimed], summary: FlushSummary, *, dry_run: bool = False) -> list[int]:
    """Write one chunk in one transaction; returns the students written. A student whose events
    cannot be decoded is set aside (logged, counted, retried next run) without blocking the rest."""
    native_uuid = bool(connection.features.has_native_uuid_field)
    now = _sql_datetime(timezone.now())
    decoded: dict[int, list[_Event]] = {}
    adopted: set[int] = set()
    for pid, found in claimed.items():
        try:
            decoded[pid] = [_decode(pid, raw, native_uuid=native_uuid, now=now) for raw in found.events]
        except (ValueError, KeyError, TypeError):
            logger.exception("flush: player %s set aside (undecodable event)", pid)
            summary.set_aside += 1
            summary.set_aside_players.append(pid)
            continue
        if found.adopted:
            adopted.add(pid)
    if dry_run:
        summary.students += len(decoded)
        summary.events += sum(len(v) for v in decoded.values())
        return []
    try:
        written = _write_chunk_transaction(decoded, adopted, summary)
    except OperationalError:
        raise  # the database is away: the caller hands the claims back for the retry to adopt
    except DatabaseError:
        # One student's rows broke the chunk: write them one by one, setting aside the bad ones.
        logger.exception("flush: chunk failed, retrying student by student")
        written = []
        for pid, rows in decoded.items():
            try:
                written += _write_chunk_transaction({pid: rows}, adopted, summary)
            except OperationalError:
                raise
            except DatabaseError:
                logger.exception("flush: player %s set aside", pid)
                summary.set_aside += 1
                summary.set_aside_players.append(pid)
    return written


def _existing_event_ids(event_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(event_ids), 5000):
        part = [uuid.UUID(e) for e in event_ids[i : i + 5000]]
        found |= {str(e) for e in LedgerEvent.objects.filter(event_id__in=part).values_list("event_id", flat=True)}
    return found


def _one_statement_per_call(cursor: Any) -> None:
    """mysqlclient's executemany cuts a multi-row INSERT at 64 KiB (~100 ledger rows): let one call
    be one statement (2,000 rows, ~2 MB, well under max_allowed_packet)."""
    raw: Any = getattr(getattr(cursor, "cursor", None), "cursor", None)
    if connection.vendor == "mysql" and hasattr(raw, "max_stmt_length"):
        raw.max_stmt_length = 8 * 1024 * 1024


def _insert_sql() -> str:
    table = connection.ops.quote_name(LedgerEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _LEDGER_FIELDS)
    marks = ", ".join(["%s"] * len(_LEDGER_FIELDS))
    # A row whose event id or idempotency pair is already in the ledger is skipped, not an error:
    # the rows really inserted are counted and the skipped ones found afterwards.
    verb = "INSERT IGNORE" if connection.vendor == "mysql" else "INSERT OR IGNORE"
    return f"{verb} INTO {table} ({columns}) VALUES ({marks})"


def _upsert_sql() -> str:
    table = connection.ops.quote_name(PlayerWallet._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _WALLET_COLUMNS)
    marks = ", ".join(["%s"] * len(_WALLET_COLUMNS))
    updated = [c for c in _WALLET_COLUMNS if c not in ("player_id", "generation", "created_at")]
    if connection.vendor == "mysql":
        assign = ", ".join(f"{connection.ops.quote_name(c)} = VALUES({connection.ops.quote_name(c)})" for c in updated)
        tail = f"ON DUPLICATE KEY UPDATE {assign}"
    else:
        assign = ", ".join(f"{connection.ops.quote_name(c)} = excluded.{connection.ops.quote_name(c)}" for c in updated)
        tail = f"ON CONFLICT (player_id) DO UPDATE SET {assign}"
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) {tail}"  # noqa: S608 (names from the model)


def _write_chunk_transaction(decoded: dict[int, list[_Event]], adopted: set[int], summary: FlushSummary) -> list[int]:
    """Lock the chunk's wallets (in player order), insert only the events not yet in the ledger,
    add only their amounts, take the streak from an event newer than the row: one transaction."""
    if not decoded:
        return []
    pids = sorted(decoded)
    statements = 0
    now = timezone.now()
    with transaction.atomic():
        existing = set(PlayerWallet.objects.filter(player_id__in=pids).values_list("player_id", flat=True))
        statements += 1
        missing = [PlayerWallet(player_id=pid) for pid in pids if pid not in existing]
        if missing:
            PlayerWallet.objects.bulk_create(missing, ignore_conflicts=True)
            statements += 1
        wallets = {
            row[0]: list(row)
            for row in PlayerWallet.objects.select_for_update()
            .filter(player_id__in=pids)
            .order_by("player_id")
            .values_list(*_WALLET_COLUMNS)
        }
        statements += 1
        # Only an adopted claim can hold events a dead flush already wrote.
        adopted_ids = [e.event_id for pid in pids if pid in adopted for e in decoded[pid]]
        already = _existing_event_ids(adopted_ids) if adopted_ids else set()
        statements += (len(adopted_ids) + 4999) // 5000
        fresh = {pid: [e for e in decoded[pid] if e.event_id not in already] for pid in pids}
        rows = [e.row for pid in pids for e in fresh[pid]]
        inserted = 0
        with connection.cursor() as cursor:
            _one_statement_per_call(cursor)
            for i in range(0, len(rows), 2000):
                cursor.executemany(_insert_sql(), rows[i : i + 2000])
                inserted += max(cursor.rowcount, 0)
                statements += 1
        rebuild: list[int] = []
        if inserted != len(rows):
            # Some events' idempotency keys were already counted on the database path: those rows
            # were skipped; drop them here too and rebuild those students' Redis copies.
            kept = _existing_event_ids([e.event_id for pid in pids for e in fresh[pid]])
            statements += 1
            for pid in pids:
                dropped = [e for e in fresh[pid] if e.event_id not in kept]
                if dropped:
                    summary.duplicates += len(dropped)
                    fresh[pid] = [e for e in fresh[pid] if e.event_id in kept]
                    rebuild.append(pid)
        upserts: list[tuple[Any, ...]] = []
        events = 0
        for pid in pids:
            if not fresh[pid]:
                continue
            events += len(fresh[pid])
            wallet = wallets[pid]
            wallet[1] += sum(e.amount for e in fresh[pid])
            newest = max(fresh[pid], key=lambda e: e.version)
            if newest.version > wallet[7]:
                current, longest, last_day, freezes, lost = newest.streak
                longest = max(longest, wallet[3])
                wallet[2:8] = [min(current, longest), longest, last_day, freezes, lost, newest.version]
            wallet[10] = now
            upserts.append(
                tuple(
                    _sql_datetime(v) if isinstance(v, dt.datetime) else (v.isoformat() if isinstance(v, dt.date) else v)
                    for v in wallet
                )
            )
        if upserts:
            with connection.cursor() as cursor:
                _one_statement_per_call(cursor)
                cursor.executemany(_upsert_sql(), upserts)
            statements += 1
        if rebuild:
            WalletOutbox.objects.bulk_create(
                [WalletOutbox(player_id=pid, generation=wallets[pid][8], created_at=now) for pid in rebuild]
            )
            statements += 1
    summary.students += len(pids)
    summary.events += events
    metrics.WALLET_WRITES_AVOIDED.inc(max(events - len(upserts), 0))
    summary.statements += statements
    summary.chunks += 1
    summary.rebuild_players += rebuild
    return pids


def _test_barrier(chunks: int) -> None:
    """A test hook: with MEMORA_FLUSH_BARRIER_AFTER_CHUNK = k, the flush stops after writing chunk k
    (committed, not yet released), says so in Redis and waits to be released (or killed)."""
    k = settings.MEMORA_FLUSH_BARRIER_AFTER_CHUNK
    if not k or chunks != k:
        return
    prefix = settings.MEMORA_REDIS_KEY_PREFIX
    hotstate.call(lambda r: r.set(f"{prefix}:barrier:reached", chunks))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not hotstate.call(lambda r: r.get(f"{prefix}:barrier:release")):
        time.sleep(0.05)


def wallet_flush(
    *,
    player_ids: list[int] | None = None,
    dry_run: bool = False,
    trigger: str = "beat",
    progress: Any = None,
    after_chunk: Any = None,
) -> FlushSummary:
    """Flush pending events to the database: claim, write, release, shard by shard."""
    try:
        return _wallet_flush(
            player_ids=player_ids, dry_run=dry_run, trigger=trigger, progress=progress, after_chunk=after_chunk
        )
    except hotstate.RedisUnavailable as exc:
        # Nothing can be claimed while Redis is away; its events wait there for the next run.
        logger.warning("flush skipped: Redis unavailable (%s)", exc)
        return FlushSummary(redis_unavailable=True)


def _wallet_flush(
    *,
    player_ids: list[int] | None,
    dry_run: bool,
    trigger: str,
    progress: Any,
    after_chunk: Any,
) -> FlushSummary:
    started = timezone.now()
    clock = time.monotonic()
    summary = FlushSummary()
    claim_id = uuid.uuid4().hex
    chunk_size = settings.MEMORA_FLUSH_CHUNK
    if player_ids is not None:
        groups: list[dict[int, list[int]]] = [{}]
        for pid in sorted(set(player_ids)):
            groups[0].setdefault(hotstate.shard_of(pid), []).append(pid)
    else:
        groups = []
        shards = settings.MEMORA_REDIS_SHARDS
        for start in range(0, shards, 128):
            found = cache.dirty_members(range(start, min(start + 128, shards)))
            if found:
                groups.append(found)
    batch: dict[int, list[int]] = {}
    batch_size = 0

    def process(by_shard: dict[int, list[int]]) -> None:
        now = time.time()
        if dry_run:
            claimed = {}
            for pid in (p for ps in by_shard.values() for p in ps):
                _version, events = cache.read_unflushed(pid)
                if events:
                    claimed[pid] = cache.Claimed([json.dumps(e) for e in events], adopted=True)
        else:
            claimed = cache.claim(
                claim_id=claim_id, now=now, lease_until=now + settings.MEMORA_FLUSH_LEASE, by_shard=by_shard
            )
        if not claimed:
            return
        try:
            written = _write_chunk(claimed, summary, dry_run=dry_run)
        except OperationalError:
            if not dry_run:
                # The database is away: hand the events back for the retry to adopt at once.
                cache.release(claim_id=claim_id, pids=list(claimed), abandon=True)
            raise
        _test_barrier(summary.chunks)
        if written:
            cache.release(claim_id=claim_id, pids=written)
        while summary.rebuild_players:
            wallet_cache_sync(player_id=summary.rebuild_players.pop())
        if progress is not None:
            progress(len(claimed))
        if after_chunk is not None:
            after_chunk(summary.chunks)

    for group in groups:
        for shard, pids in group.items():
            for i in range(0, len(pids), chunk_size):
                part = pids[i : i + chunk_size]
                batch.setdefault(shard, []).extend(part)
                batch_size += len(part)
                if batch_size >= chunk_size:
                    process(batch)
                    batch, batch_size = {}, 0
    if batch:
        process(batch)
    if not dry_run:
        metrics.FLUSH_SECONDS.observe(time.monotonic() - clock)
    if not dry_run and (summary.students or player_ids is None):
        FlushRun.objects.create(
            started_at=started,
            finished_at=timezone.now(),
            students=summary.students,
            events=summary.events,
            set_aside=summary.set_aside,
            statements=summary.statements,
            trigger=trigger,
        )
    return summary


# --- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    player_id: int
    field: str
    wallet: Any
    ledger: Any


def wallet_verify(*, fix: bool = False, player_ids: list[int] | None = None) -> list[Drift]:
    """Database wallets against what their ledgers imply; with ``fix``, correct them."""
    drifts: list[Drift] = []
    wallets = PlayerWallet.objects.all().order_by("player_id")
    if player_ids:
        wallets = wallets.filter(player_id__in=player_ids)
    totals = dict(
        LedgerEvent.objects.values("player_id").annotate(total=Sum("amount")).values_list("player_id", "total")
    )
    for wallet in wallets.iterator(chunk_size=2000):
        expected_total = int(totals.get(wallet.player_id) or 0)
        newest = LedgerEvent.objects.filter(player_id=wallet.player_id).order_by("-version", "-id").first()
        expected: dict[str, Any] = {"xp_total": expected_total}
        if newest is not None:
            expected.update(
                current_streak=newest.streak_after,
                last_activity_date=newest.last_day_after,
                streak_freezes=newest.freezes_after,
                streak_before_break=newest.break_after,
            )
        found = [
            Drift(wallet.player_id, name, getattr(wallet, name), value)
            for name, value in expected.items()
            if getattr(wallet, name) != value
        ]
        if found and fix:
            with transaction.atomic():
                locked = PlayerWallet.objects.select_for_update().get(pk=wallet.pk)
                for drift in found:
                    setattr(locked, drift.field, drift.ledger)
                locked.longest_streak = max(locked.longest_streak, locked.current_streak)
                locked.generation += 1
                locked.save()
                WalletOutbox.objects.create(
                    player_id=wallet.player_id, generation=locked.generation, created_at=timezone.now()
                )
                pid = wallet.player_id
                transaction.on_commit(lambda pid=pid: wallet_cache_sync(player_id=pid))  # type: ignore[misc]
        drifts += found
    return drifts


def wallet_restore_streak(*, player_id: int, reason: str, caller: str, idem_key: str, actor: str) -> AwardOutcome:
    """Support puts back the streak the last break reset: a ``streak_restored`` ledger event
    through the award path, audited by its actor, reason and the streak before and after."""
    profile = PlayerProfile.objects.filter(pk=player_id).first()
    if profile is None:
        raise ApiError("not_found", "No such player.", status=404)
    from wallets import idempotency

    return wallet_award(
        request=AwardRequest(
            player_id=player_id,
            kind="restore",
            base_amount=0,
            local_day=local_day_for(profile=profile, at=timezone.now()),
            idem_scope=idempotency.scope(caller=caller, endpoint="streak_restore", player_id=player_id),
            idem_key=idem_key,
            fingerprint=idempotency.fingerprint(
                method="POST", route="streak_restore", path_params={"player_id": player_id}, body={"reason": reason}
            ),
            reason=reason,
            actor=actor,
        )
    )

"""Every change to devices and sessions: logins, logouts, revocations, support actions.

Each database-first change bumps the student's generation and writes an outbox row in the same
transaction; after commit the student's Redis copy is rebuilt and the row deleted. If Redis is
away the row stays and the reconciler finishes the job when Redis answers.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from core import hotstate
from core.errors import ApiError
from devices import cache, loginlimits, selectors, tokens
from devices.models import (
    AuditAction,
    AuthorizedDevice,
    CacheOutbox,
    DeviceAuditEntry,
    EndReason,
    PlayerAuthState,
    PlayerSession,
)
from players.models import PlayerProfile

logger = logging.getLogger(__name__)

# Checked against when the username is unknown, so that both answers take as long.
_DUMMY_HASH = make_password("memora-timing-equalizer")


@dataclass(frozen=True)
class LoginResult:
    token: str
    device_proof: str
    session: PlayerSession
    device: AuthorizedDevice
    profile: PlayerProfile


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --- cache synchronisation ------------------------------------------------------------------------


def _bump(*, player_id: int, now: dt.datetime, state: PlayerAuthState | None = None, sync: bool = True) -> int:
    """Bump the generation and leave an outbox row, inside the caller's transaction (``state``:
    the row when the caller already holds it locked; ``sync`` False: the caller writes the copy)."""
    if state is None:
        state, _ = PlayerAuthState.objects.select_for_update().get_or_create(player_id=player_id)
    state.generation += 1
    state.save(update_fields=["generation"])
    CacheOutbox.objects.create(player_id=player_id, generation=state.generation, created_at=now)
    if sync:
        transaction.on_commit(lambda: auth_cache_sync(player_id=player_id))
    return state.generation


def _outbox_done(*, player_id: int, generation: int) -> None:
    """One DELETE (no collector, no transaction of its own: the outbox has no dependants)."""
    table = connection.ops.quote_name(CacheOutbox._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE player_id = %s AND generation <= %s", [player_id, generation])  # noqa: S608


def auth_cache_sync(*, player_id: int) -> bool:
    """Rebuild the student's Redis copy from the database; True if Redis now holds it."""
    snapshot = selectors.cache_snapshot(player_id=player_id)
    if snapshot is None:
        # The student was deleted: nothing may answer for them from Redis any more.
        try:
            cache.forget(player_id=player_id)
        except hotstate.RedisUnavailable as exc:
            cache.stale_players.add(player_id)
            logger.warning("auth cache of deleted player %s left to the reconciler: %s", player_id, exc)
            return False
        cache.stale_players.discard(player_id)
        CacheOutbox.objects.filter(player_id=player_id).delete()
        return True
    generation, fields = snapshot
    return _auth_cache_write(player_id=player_id, generation=generation, fields=fields)


def _auth_cache_write(*, player_id: int, generation: int, fields: dict[str, object]) -> bool:
    """Write a snapshot taken at ``generation`` (after its transaction committed), then drop the
    outbox rows it covers; True if Redis now holds it."""
    try:
        cache.write(
            player_id=player_id,
            generation=generation,
            ttl=settings.MEMORA_SESSION_LIFETIME + 86400,
            fields={k: str(v) for k, v in fields.items()},
        )
    except hotstate.RedisUnavailable as exc:
        cache.stale_players.add(player_id)
        logger.warning("auth cache of player %s left to the reconciler: %s", player_id, exc)
        return False
    cache.stale_players.discard(player_id)
    # A refused write means Redis already holds a newer generation: this row is done either way.
    _outbox_done(player_id=player_id, generation=generation)
    return True


# --- login and logout -----------------------------------------------------------------------------


def _device_limit_error(active: list[AuthorizedDevice]) -> ApiError:
    return ApiError(
        "device_limit_reached",
        f"This account is already used on {len(active)} devices. Remove one to continue.",
        status=403,
        devices=[
            {
                "device_id": str(d.device_id),
                "name": d.name,
                "platform": d.platform,
                "last_seen_at": iso(d.last_seen_at),
            }
            for d in active
        ],
    )


def _removal_cooldown_check(*, state: PlayerAuthState, now: dt.datetime) -> None:
    cooldown = dt.timedelta(seconds=settings.MEMORA_DEVICE_REMOVAL_COOLDOWN)
    if state.last_removal_at is not None and now < state.last_removal_at + cooldown:
        days = settings.MEMORA_DEVICE_REMOVAL_COOLDOWN // 86400
        raise ApiError(
            "device_removal_cooldown",
            f"You can remove a device once every {days} days.",
            status=403,
            next_allowed_at=iso(state.last_removal_at + cooldown),
        )


def _end_sessions(*, player_id: int, reason: str, now: dt.datetime, device: AuthorizedDevice | None = None) -> int:
    live = PlayerSession.objects.filter(player_id=player_id, is_live=True)
    if device is not None:
        live = live.filter(device=device)
    return live.update(is_live=None, ended_at=now, end_reason=reason)


def _revoke(
    *,
    device: AuthorizedDevice,
    actor: User | None,
    reason: str,
    action: str,
    blocked: bool,
    now: dt.datetime,
) -> None:
    device.revoked_at = now
    device.revoked_by = actor  # type: ignore[assignment]
    device.revoke_reason = reason
    device.login_blocked = blocked
    device.save(update_fields=["revoked_at", "revoked_by", "revoke_reason", "login_blocked"])
    _end_sessions(player_id=device.player_id, reason=EndReason.DEVICE_REVOKED, now=now, device=device)
    DeviceAuditEntry.objects.create(
        player_id=device.player_id, device=device, action=action, actor=actor, reason=reason, at=now
    )


def invalid_credentials() -> ApiError:
    return ApiError("invalid_credentials", "Wrong username or password.", status=401)


def login_verify_credentials(*, username: str, password: str) -> PlayerProfile | None:
    """The student whose credentials these are, or None; the same cost either way."""
    profile = (
        PlayerProfile.objects.select_related("user").filter(user__username__iexact=username).first()
        if username
        else None
    )
    if profile is not None and profile.user.username.lower() != username.lower():
        # The collation also matches accented and full-width spellings ("amíra" finds "amira"),
        # and each spelling has its own lockout counters: only the username itself, in any
        # letter case, may log in.
        profile = None
    if profile is None:
        check_password(password, _DUMMY_HASH)
        return None
    # No setter: a login never rewrites the stored hash (that would read as a password change).
    if not check_password(password, profile.user.password) or not profile.user.is_active:
        return None
    return profile


def device_proof_verify(*, username: str, device_id: str, proof: str | None) -> bool:
    """True when ``proof`` is the current proof of ``device_id``, authorized on ``username``'s
    account (one indexed lookup, before the password is checked)."""
    if not proof or not tokens.device_proof_valid_shape(proof):
        return False
    row = (
        AuthorizedDevice.objects.filter(proof_digest=tokens.digest(proof))
        .values_list("device_id", "revoked_at", "player__user__username")
        .first()
    )
    if row is None:
        return False
    found_device, revoked_at, found_username = row
    return revoked_at is None and str(found_device) == device_id and found_username.lower() == username.lower()


@transaction.atomic
def login_locks_clear(*, player_id: int, actor: User | None) -> int:
    """Support lifts every login lock of the student (audited); returns the counters removed."""
    profile = PlayerProfile.objects.select_related("user").get(pk=player_id)
    removed = loginlimits.login_locks_clear(username=profile.user.username)
    DeviceAuditEntry.objects.create(
        player_id=player_id,
        action=AuditAction.LOGIN_LOCKS_CLEARED,
        actor=actor,
        reason=f"{removed} counter(s) and lock(s) removed",
        at=timezone.now(),
    )
    return removed


@transaction.atomic
def session_login(
    *,
    profile: PlayerProfile,
    device_id: str,
    device_name: str | None,
    platform: str | None,
    replace_device_id: str | None = None,
) -> LoginResult:
    """Authorize the device (free slot, replacement or policy) and start the one live session.

    Runs under a lock on the student's profile row: parallel logins from new devices serialize
    here, so the device limit holds. Any refusal raises before a write sticks.
    """
    now = timezone.now()
    checked = profile.user
    # One locking read of the profile, its user and its auth state (a LEFT JOIN read in that order:
    # the order every writer locks them in).
    profile = PlayerProfile.objects.select_for_update().select_related("user", "auth_state").get(pk=profile.pk)
    if profile.user.password != checked.password or not profile.user.is_active:
        # The password changed or the account was deactivated after the password was checked:
        # that change ended the sessions it saw, and this one must not start after it.
        raise invalid_credentials()
    try:
        state = profile.auth_state
    except PlayerAuthState.DoesNotExist:  # the student's first login
        state, _ = PlayerAuthState.objects.select_for_update().get_or_create(player=profile)
    device_uuid = uuid.UUID(device_id)
    # Every device of the student in one read: this one (in any state), the active ones for the
    # limit, and, after the changes below, the list the Redis copy holds.
    devices = list(AuthorizedDevice.objects.filter(player=profile).order_by("authorized_at", "id"))
    device = next((d for d in devices if d.device_id == device_uuid), None)
    if device is not None and device.login_blocked:
        raise ApiError("device_revoked", "This device was removed from your account by support.", status=403)

    if device is None or device.revoked_at is not None:
        active = [d for d in devices if d.revoked_at is None]
        if len(active) >= settings.MEMORA_MAX_DEVICES:
            victim = _choose_replacement(active=active, replace_device_id=replace_device_id)
            _removal_cooldown_check(state=state, now=now)
            reason = "replaced at login" if replace_device_id else "least recently used device replaced at login"
            _revoke(device=victim, actor=None, reason=reason, action=AuditAction.REPLACED, blocked=False, now=now)
            state.last_removal_at = now
            state.save(update_fields=["last_removal_at"])
        if device is None:
            device = AuthorizedDevice.objects.create(
                player=profile,
                device_id=device_uuid,
                name=device_name or "",
                platform=platform or "",
                authorized_at=now,
                last_seen_at=now,
            )
            devices.append(device)
        else:
            device.revoked_at = None
            device.revoked_by = None
            device.revoke_reason = ""
            device.authorized_at = now
        DeviceAuditEntry.objects.create(player=profile, device=device, action=AuditAction.AUTHORIZED, at=now)
    if device_name is not None:
        device.name = device_name
    if platform is not None:
        device.platform = platform
    device.last_seen_at = now
    proof = tokens.device_proof_new()
    device.proof_digest = tokens.digest(proof)
    device.save()

    _end_sessions(player_id=profile.pk, reason=EndReason.REPLACED, now=now)
    token = tokens.token_new(profile.pk)
    session = PlayerSession.objects.create(
        player=profile,
        device=device,
        token_digest=tokens.digest(token),
        started_at=now,
        expires_at=now + dt.timedelta(seconds=settings.MEMORA_SESSION_LIFETIME),
        last_seen_at=now,
    )
    generation = _bump(player_id=profile.pk, now=now, state=state, sync=False)
    # The copy is read here, under the student's lock, from what this login holds and has just
    # written (no second read of the profile, the state or the devices after commit).
    active_ids = [
        str(d.device_id) for d in sorted(devices, key=lambda d: (d.authorized_at, d.pk)) if d.revoked_at is None
    ]
    fields = selectors.cache_fields(profile=profile, active_device_ids=active_ids)
    player_id = profile.pk
    transaction.on_commit(lambda: _auth_cache_write(player_id=player_id, generation=generation, fields=fields))
    return LoginResult(token=token, device_proof=proof, session=session, device=device, profile=profile)


def _choose_replacement(*, active: list[AuthorizedDevice], replace_device_id: str | None) -> AuthorizedDevice:
    if replace_device_id is not None:
        for candidate in active:
            if str(candidate.device_id) == replace_device_id:
                return candidate
        raise ApiError(
            "validation_error",
            "Some fields are invalid.",
            status=400,
            errors={"replace_device_id": ["Not one of this account's authorized devices."]},
        )
    if settings.MEMORA_DEVICE_LIMIT_POLICY == "replace_least_recent":
        return min(active, key=lambda d: (d.last_seen_at, d.pk))
    raise _device_limit_error(active)


@transaction.atomic
def session_end(*, session_id: int, reason: str) -> None:
    now = timezone.now()
    player_id = PlayerSession.objects.filter(pk=session_id).values_list("player_id", flat=True).first()
    if player_id is None:
        return
    # The profile row first, as every other writer of sessions does: locking the session first
    # deadlocked against a concurrent login (which locks the profile, then ends the sessions).
    PlayerProfile.objects.select_for_update().filter(pk=player_id).first()
    session = PlayerSession.objects.select_for_update().filter(pk=session_id, is_live=True).first()
    if session is None:
        return
    session.is_live = None
    session.ended_at = now
    session.end_reason = reason
    session.save(update_fields=["is_live", "ended_at", "end_reason"])
    _bump(player_id=session.player_id, now=now)


@transaction.atomic
def session_end_all(*, player_id: int, reason: str, actor: User | None = None) -> int:
    """End every live session of the student (password change, deactivation, support)."""
    now = timezone.now()
    PlayerProfile.objects.select_for_update().filter(pk=player_id).first()
    ended = _end_sessions(player_id=player_id, reason=reason, now=now)
    if reason == EndReason.ENDED_BY_SUPPORT:
        DeviceAuditEntry.objects.create(
            player_id=player_id, action=AuditAction.SESSIONS_ENDED, actor=actor, reason=reason, at=now
        )
    _bump(player_id=player_id, now=now)
    return ended


# --- devices --------------------------------------------------------------------------------------


@transaction.atomic
def device_remove_by_student(*, player_id: int, device_id: str, current_device_id: str) -> None:
    now = timezone.now()
    PlayerProfile.objects.select_for_update().get(pk=player_id)
    state, _ = PlayerAuthState.objects.select_for_update().get_or_create(player_id=player_id)
    device = AuthorizedDevice.objects.filter(
        player_id=player_id, device_id=uuid.UUID(device_id), revoked_at__isnull=True
    ).first()
    if device is None:
        raise ApiError("not_found", "No such device on this account.", status=404)
    if device_id == current_device_id:
        raise ApiError("permission_denied", "This device cannot remove itself; sign out instead.", status=403)
    _removal_cooldown_check(state=state, now=now)
    _revoke(
        device=device, actor=None, reason="removed by the student", action=AuditAction.REMOVED, blocked=False, now=now
    )
    state.last_removal_at = now
    state.save(update_fields=["last_removal_at"])
    _bump(player_id=player_id, now=now)


@transaction.atomic
def device_revoke(*, device_pk: int, actor: User | None, reason: str) -> bool:
    """Support's revocation: frees the slot, ends the device's session, blocks the device id."""
    now = timezone.now()
    device = AuthorizedDevice.objects.select_related("player").get(pk=device_pk)
    PlayerProfile.objects.select_for_update().get(pk=device.player_id)
    device.refresh_from_db()
    if device.login_blocked:
        return False
    _revoke(device=device, actor=actor, reason=reason, action=AuditAction.REVOKED, blocked=True, now=now)
    _bump(player_id=device.player_id, now=now)
    return True


@transaction.atomic
def device_allow(*, device_pk: int, actor: User | None, reason: str = "") -> bool:
    """Let a revoked device id log in again (it takes a free slot at its next login)."""
    now = timezone.now()
    device = AuthorizedDevice.objects.get(pk=device_pk)
    PlayerProfile.objects.select_for_update().get(pk=device.player_id)
    device.refresh_from_db()
    if not device.login_blocked:
        return False
    device.login_blocked = False
    device.save(update_fields=["login_blocked"])
    DeviceAuditEntry.objects.create(
        player_id=device.player_id, device=device, action=AuditAction.ALLOWED, actor=actor, reason=reason, at=now
    )
    _bump(player_id=device.player_id, now=now)
    return True


def player_deleted(*, player_id: int) -> None:
    """The student is being deleted (inside that transaction): drop the cached copy after commit,
    so that a live session's token stops working on its next request. The outbox row outlives the
    student: if Redis is away now, the reconciler removes the copy when it returns."""
    CacheOutbox.objects.create(player_id=player_id, generation=0, created_at=timezone.now())
    transaction.on_commit(lambda: auth_cache_sync(player_id=player_id))


def player_profile_changed(*, player_id: int) -> None:
    """The profile's timezone changed (inside its transaction): refresh the cached copy."""
    _bump(player_id=player_id, now=timezone.now())


# --- last seen ------------------------------------------------------------------------------------


def last_seen_persist(*, batch: int = 1000) -> int:
    """Write the last-seen times that Redis marked as due (at most once a minute per session)."""
    shards = range(settings.MEMORA_REDIS_SHARDS)
    try:
        due = cache.pop_seen(shards, batch)
    except hotstate.RedisUnavailable:
        return 0
    player_ids = [pid for pids in due.values() for pid in pids]
    if not player_ids:
        return 0
    try:
        rows = cache.read_seen(player_ids)
    except hotstate.RedisUnavailable:
        return 0
    seen_by_session: dict[int, dt.datetime] = {}
    for _pid, sid, seen in rows:
        if sid and seen:
            seen_by_session[int(sid)] = dt.datetime.fromtimestamp(float(seen), tz=dt.UTC)
    sessions = list(PlayerSession.objects.filter(pk__in=list(seen_by_session)).select_related("device"))
    devices = []
    for session in sessions:
        seen_at = seen_by_session[session.pk]
        if seen_at > session.last_seen_at:
            session.last_seen_at = seen_at
        if seen_at > session.device.last_seen_at:
            session.device.last_seen_at = seen_at
            devices.append(session.device)
    # Devices before sessions, the order a login locks them in: the other order deadlocked
    # against a login of one of these students.
    with transaction.atomic():
        AuthorizedDevice.objects.bulk_update(devices, ["last_seen_at"], batch_size=500)
        PlayerSession.objects.bulk_update(sessions, ["last_seen_at"], batch_size=500)
    return len(sessions)

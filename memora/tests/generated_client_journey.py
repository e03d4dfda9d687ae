"""A student's whole journey through the client that openapi-python-client generates from
/api/schema/ (as the package ``memora_client``).

Not a test module: test_generated_client.py generates the package, type-checks this file against it
with ``mypy --strict`` and then runs ``run_journey`` in-process. Every request is a generated typed
function and every answer a generated model, narrowed with ``isinstance`` — no cast, no
``type: ignore``: what a client author would write.
"""

from __future__ import annotations

import datetime as dt
import uuid
from http import HTTPStatus
from typing import Any

from memora_client import AuthenticatedClient, Client
from memora_client.api.auth import auth_login, auth_logout, auth_register
from memora_client.api.profile import profile_get
from memora_client.api.session import session_get
from memora_client.api.wallet import lesson_complete, wallet_get, wallet_history
from memora_client.models import (
    ErrorOutput,
    HistoryEntryOutputKindEnum,
    HistoryOutput,
    LessonCompleteInputRequest,
    LessonCompleteOutput,
    LoginInputRequest,
    LoginOutput,
    ProfileOutput,
    RegisterInputRequest,
    RegisterOutput,
    SessionOutput,
    WalletOutput,
)

PASSWORD = "correct horse battery"
LESSON = "algebra-1"


def run_journey(*, base_url: str, httpx_args: dict[str, Any], username: str, perfect_lesson_xp: int) -> None:
    # Any status the schema does not document raises errors.UnexpectedStatus.
    anonymous = Client(base_url=base_url, httpx_args=httpx_args, raise_on_unexpected_status=True)

    registered = auth_register.sync_detailed(
        client=anonymous,
        body=RegisterInputRequest(username=username, password=PASSWORD, display_name="Amira", timezone="Africa/Cairo"),
    )
    assert registered.status_code == HTTPStatus.CREATED, registered.content
    account = registered.parsed
    assert isinstance(account, RegisterOutput), account
    assert (account.username, account.display_name, account.timezone) == (username, "Amira", "Africa/Cairo")
    assert isinstance(account.created_at, dt.datetime)

    device_id = str(uuid.uuid4())
    wrong = auth_login.sync_detailed(
        client=anonymous, body=LoginInputRequest(username=username, password="not it at all"), x_device_id=device_id
    )
    assert wrong.status_code == HTTPStatus.UNAUTHORIZED
    assert isinstance(wrong.parsed, ErrorOutput) and wrong.parsed.code == "invalid_credentials", wrong.parsed

    logged_in = auth_login.sync_detailed(
        client=anonymous,
        body=LoginInputRequest(username=username, password=PASSWORD, device_name="Amira's phone", platform="android"),
        x_device_id=device_id,
    )
    assert logged_in.status_code == HTTPStatus.OK, logged_in.content
    login = logged_in.parsed
    assert isinstance(login, LoginOutput), login
    assert login.player.id == account.id and login.player.username == username
    assert login.device.device_id == device_id and login.device.is_current
    assert login.device_proof.startswith("dp_")
    assert login.expires_at > dt.datetime.now(dt.UTC)
    assert login.idle_timeout_seconds > 0

    student = AuthenticatedClient(
        base_url=base_url, token=login.token, httpx_args=httpx_args, raise_on_unexpected_status=True
    )

    session = session_get.sync_detailed(client=student, x_device_id=device_id).parsed
    assert isinstance(session, SessionOutput), session
    assert (session.device.device_id, session.device.name, session.device.platform) == (
        device_id,
        "Amira's phone",
        "android",
    )
    assert session.started_at < session.expires_at and session.last_seen_at < session.expires_at

    profile = profile_get.sync_detailed(client=student, x_device_id=device_id).parsed
    assert isinstance(profile, ProfileOutput), profile
    assert (profile.id, profile.username, profile.timezone_pending) == (account.id, username, None)

    key = f"journey-{uuid.uuid4()}"
    first = lesson_complete.sync_detailed(
        LESSON, client=student, body=LessonCompleteInputRequest(score=100), idempotency_key=key, x_device_id=device_id
    )
    assert first.status_code == HTTPStatus.CREATED, first.content
    assert "Idempotent-Replayed" not in first.headers
    award = first.parsed
    assert isinstance(award, LessonCompleteOutput), award
    assert (award.xp_awarded, award.capped, award.wallet.xp_total) == (perfect_lesson_xp, False, perfect_lesson_xp)
    assert isinstance(award.event_id, uuid.UUID)

    replay = lesson_complete.sync_detailed(
        LESSON, client=student, body=LessonCompleteInputRequest(score=100), idempotency_key=key, x_device_id=device_id
    )
    assert replay.status_code == HTTPStatus.CREATED, replay.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    replayed = replay.parsed
    assert isinstance(replayed, LessonCompleteOutput), replayed
    assert (replayed.event_id, replayed.xp_awarded, replayed.wallet.xp_total) == (
        award.event_id,
        perfect_lesson_xp,
        perfect_lesson_xp,
    )

    wallet = wallet_get.sync_detailed(client=student, x_device_id=device_id).parsed
    assert isinstance(wallet, WalletOutput), wallet
    assert (wallet.xp_total, wallet.xp_today, wallet.current_streak, wallet.streak_active_today) == (
        perfect_lesson_xp,
        perfect_lesson_xp,
        1,
        True,
    )
    assert isinstance(wallet.today, dt.date) and wallet.last_activity_date == wallet.today

    history = wallet_history.sync_detailed(client=student, x_device_id=device_id, page_size=10).parsed
    assert isinstance(history, HistoryOutput), history
    assert history.next_ is None and len(history.results) == 1  # the replay added nothing
    entry = history.results[0]
    assert (entry.event_id, entry.kind, entry.lesson_id, entry.amount, entry.local_day) == (
        award.event_id,
        HistoryEntryOutputKindEnum.LESSON,
        LESSON,
        perfect_lesson_xp,
        wallet.today,
    )

    logged_out = auth_logout.sync_detailed(client=student, x_device_id=device_id)
    assert logged_out.status_code == HTTPStatus.NO_CONTENT

    after = session_get.sync_detailed(client=student, x_device_id=device_id)
    assert after.status_code == HTTPStatus.UNAUTHORIZED
    ended = after.parsed
    assert isinstance(ended, ErrorOutput), ended
    assert (ended.code, ended.reason) == ("session_ended", "logout")

"""The login, in the design's order of checks: body shape → X-Device-ID → per-address attempt
limit → device proof (statement 12) → the locks that apply → credentials → the device rules (in
:func:`devices.services.session_login`). A wrong password never learns anything about devices.

Its cost besides the one hash (issue 14): one Redis round trip before the hash (the attempt
counted and the locks read together), one statement to find the student, one transaction for the
device rules and the session that also reads what the Redis copy needs, one Redis write and one
outbox DELETE after commit."""

from __future__ import annotations

from typing import Any

from core.errors import rate_limited, validation_error
from devices import loginlimits, services, tokens
from devices.serializers import LoginInput
from devices.verification import invalid_device_id


def login_attempt(
    *, body: dict[str, Any], device_header: str | None, proof_header: str | None, address: str
) -> services.LoginResult:
    """One login from the app; raises ApiError with the design's code for every refusal."""
    shape = {
        f: ["This field is required and must be a string."]
        for f in ("username", "password")
        if not isinstance(body.get(f), str)
    }
    if shape:
        raise validation_error(shape)
    device_id = tokens.device_id_normalize(device_header)
    if device_id is None:
        raise invalid_device_id()
    username = body["username"]
    # Statement 12: the current proof of an authorized device holds this login only to that
    # device's own counter (not the address's attempt limit, not the username's locks). Its
    # lookup is a database read: it comes first so that the Redis gate is one round trip.
    proven = services.device_proof_verify(username=username, device_id=device_id, proof=proof_header)
    scope = loginlimits.Scope(
        user_key=loginlimits.username_key(username), address=address, device_id=device_id if proven else None
    )
    # The address's attempt is counted and the locks are read in one round trip; each answers in
    # the design's order below.
    gate = loginlimits.login_gate(ip=address, scope=scope)
    if not gate.attempts.allowed and not proven:
        raise rate_limited(gate.attempts.retry_after, scope="login_ip")
    data = LoginInput(data=body)
    data.is_valid(raise_exception=True)
    if gate.lock_wait > 0:
        raise rate_limited(gate.lock_wait, scope="login_lockout")
    profile = services.login_verify_credentials(username=username, password=data.validated_data["password"])
    if profile is None:
        loginlimits.login_failure_record(scope)
        raise services.invalid_credentials()
    loginlimits.login_success_record(scope, failures=gate.failures)
    replace = data.validated_data.get("replace_device_id")
    return services.session_login(
        profile=profile,
        device_id=device_id,
        device_name=data.validated_data.get("device_name"),
        platform=data.validated_data.get("platform"),
        replace_device_id=str(replace) if replace else None,
    )

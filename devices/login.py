"""The login, in the design's order of checks: body shape → X-Device-ID → per-address attempt
limit → device proof (statement 12) → the locks that apply → credentials → the device rules (in
:func:`devices.services.session_login`). A wrong password never learns anything about devices."""

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
    attempts = loginlimits.login_ip_allowed(ip=address)
    username = body["username"]
    # Statement 12: the current proof of an authorized device holds this login only to that
    # device's own counter (not the address's attempt limit, not the username's locks).
    proven = services.device_proof_verify(username=username, device_id=device_id, proof=proof_header)
    if not attempts.allowed and not proven:
        raise rate_limited(attempts.retry_after, scope="login_ip")
    data = LoginInput(data=body)
    data.is_valid(raise_exception=True)
    scope = loginlimits.Scope(
        user_key=loginlimits.username_key(username), address=address, device_id=device_id if proven else None
    )
    loginlimits.login_lock_check(scope)
    profile = services.login_verify_credentials(username=username, password=data.validated_data["password"])
    if profile is None:
        loginlimits.login_failure_record(scope)
        raise services.invalid_credentials()
    loginlimits.login_success_record(scope)
    replace = data.validated_data.get("replace_device_id")
    return services.session_login(
        profile=profile,
        device_id=device_id,
        device_name=data.validated_data.get("device_name"),
        platform=data.validated_data.get("platform"),
        replace_device_id=str(replace) if replace else None,
    )

"""Session tokens ``mem_<player_id>_<secret>`` and service keys ``mks_<prefix>_<secret>``.

The secret comes from ``secrets`` (256 bits); only SHA-256 digests are stored, compared in
constant time where a digest is compared at all (lookups go by the digest itself).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"mem_([1-9][0-9]{0,17})_([A-Za-z0-9_-]{43,86})")
_KEY_RE = re.compile(r"mks_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43,86})")
_PROOF_RE = re.compile(r"dp_[A-Za-z0-9_-]{43,86}")
_DEVICE_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def token_new(player_id: int) -> str:
    return f"mem_{player_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class ParsedToken:
    player_id: int
    digest: str


def token_parse(raw: str) -> ParsedToken | None:
    match = _TOKEN_RE.fullmatch(raw)
    if match is None:
        return None
    return ParsedToken(player_id=int(match.group(1)), digest=digest(raw))


def service_key_new() -> tuple[str, str]:
    """A new key and its public prefix."""
    prefix = secrets.token_hex(6)
    return f"mks_{prefix}_{secrets.token_urlsafe(32)}", prefix


def service_key_valid_shape(raw: str) -> bool:
    return _KEY_RE.fullmatch(raw) is not None


def device_proof_new() -> str:
    """A device proof (statement 12): returned at login, kept by the app with its device id."""
    return f"dp_{secrets.token_urlsafe(32)}"


def device_proof_valid_shape(raw: str) -> bool:
    return _PROOF_RE.fullmatch(raw) is not None


def device_id_normalize(raw: str | None) -> str | None:
    """The canonical lower-case UUID v4, or None if ``raw`` is not one."""
    if raw is None:
        return None
    value = raw.strip().lower()
    return value if _DEVICE_ID_RE.fullmatch(value) else None

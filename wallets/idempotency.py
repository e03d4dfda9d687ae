"""Idempotency keys (IETF draft, Stripe semantics): validation, scope and fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.errors import ApiError
from wallets.models import DIGEST_BYTES, FP_DIGEST_BYTES


def key_from_header(raw: str | None) -> str:
    if raw is None or raw == "":
        raise ApiError("idempotency_key_missing", "This request needs an Idempotency-Key header.", status=400)
    if len(raw) > 255 or any(not (0x20 <= ord(ch) <= 0x7E) for ch in raw):
        raise ApiError(
            "idempotency_key_invalid", "Idempotency-Key must be 1 to 255 printable ASCII characters.", status=400
        )
    return raw


def scope(*, caller: str, endpoint: str, player_id: int) -> str:
    """(caller, endpoint, target student): the student's devices share one caller."""
    return f"{caller}|{endpoint}|{player_id}"


def fingerprint(*, method: str, route: str, path_params: dict[str, Any], body: Any) -> str:
    canonical = json.dumps(
        [method.upper(), route, path_params, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_digest(scope_value: str, key: str) -> str:
    """The request's key digest (128 bits, hex): names its Redis record; the ledger keeps it binary."""
    return hashlib.sha256(f"{scope_value}\n{key}".encode()).hexdigest()[: DIGEST_BYTES * 2]


def fingerprint_digest(fingerprint_hex: str) -> str:
    """The 64 bits of a fingerprint that the ledger and the Redis record compare (hex)."""
    return fingerprint_hex[: FP_DIGEST_BYTES * 2]


def ledger_digest(hex_digest: str, size: int = DIGEST_BYTES) -> bytes:
    """A digest as the ledger stores it: its first ``size`` bytes, binary (case always counts)."""
    return bytes.fromhex(hex_digest[: size * 2])


def ledger_fp_digest(hex_digest: str) -> bytes:
    return ledger_digest(hex_digest, FP_DIGEST_BYTES)


def same_fingerprint(stored: bytes | memoryview | None, request_fp_hex: str) -> bool:
    """A stored fingerprint digest (a row written before the ledger kept 64 bits has 128) against a
    request's."""
    return bytes(stored or b"")[:FP_DIGEST_BYTES] == ledger_fp_digest(request_fp_hex)

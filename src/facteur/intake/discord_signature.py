"""Discord's request signature: Ed25519 over the ``X-Signature-Timestamp`` header followed by the raw body."""

from __future__ import annotations

import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_PUBLIC_KEY = re.compile(r"[0-9a-fA-F]{64}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")


def verify_signature(public_key_hex: str, signature_hex: str, timestamp: str, raw_body: bytes) -> bool:
    """Whether ``signature_hex`` signs ``timestamp + raw_body`` with the key; malformed input is ``False``."""
    if _PUBLIC_KEY.fullmatch(public_key_hex) is None or _SIGNATURE.fullmatch(signature_hex) is None:
        return False
    try:
        message = timestamp.encode("utf-8") + raw_body
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, UnicodeEncodeError, ValueError):
        return False
    return True

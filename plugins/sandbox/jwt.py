"""Minimal ES256 JSON Web Tokens for the emulator, built on ``cryptography``.

Only what the sandbox needs: sign a claims mapping with a P-256 key, and verify a compact
token's signature and header. Claim checks (``exp`` and the session) are the emulator's job.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "JWTError",
    "b64url_decode",
    "b64url_encode",
    "generate_signing_key",
    "sign_es256",
    "verify_es256",
]

_HEADER = {"alg": "ES256", "typ": "JWT"}
_COORDINATE_BYTES = 32  # P-256: r and s are 32 bytes each in a JWS signature.


class JWTError(ValueError):
    """A token is not a well-formed ES256 JWT signed by the expected key.

    The message never contains the token itself.
    """


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url text, as JWS requires."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url ``text``; raise :class:`JWTError` when it is not valid."""
    try:
        raw = text.encode("ascii")
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError) as error:
        raise JWTError("a token segment is not base64url") from error


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """Make a fresh P-256 private key for signing ES256 tokens."""
    return ec.generate_private_key(ec.SECP256R1())


def _json_segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def sign_es256(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """Return the compact ES256 JWT of ``claims`` signed with ``key``."""
    signing_input = f"{_json_segment(_HEADER)}.{_json_segment(claims)}"
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
    return f"{signing_input}.{b64url_encode(raw)}"


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise JWTError(f"the token {what} is not JSON") from error
    if not isinstance(value, dict):
        raise JWTError(f"the token {what} is not a JSON object")
    return value


def verify_es256(token: str, public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """Verify ``token``'s ES256 signature with ``public_key`` and return its claims.

    Raises :class:`JWTError` when the token is malformed, uses another algorithm or was not
    signed by the matching private key. Expiry is not checked here.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("a JWT has three dot-separated segments")
    header_segment, claims_segment, signature_segment = parts
    header = _json_object(header_segment, "header")
    if header.get("alg") != "ES256":
        raise JWTError("the token is not signed with ES256")
    raw = b64url_decode(signature_segment)
    if len(raw) != 2 * _COORDINATE_BYTES:
        raise JWTError("an ES256 signature is 64 bytes")
    r = int.from_bytes(raw[:_COORDINATE_BYTES], "big")
    s = int.from_bytes(raw[_COORDINATE_BYTES:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s),
            f"{header_segment}.{claims_segment}".encode("ascii"),
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, UnicodeEncodeError) as error:
        raise JWTError("the token's signature does not verify") from error
    return _json_object(claims_segment, "payload")

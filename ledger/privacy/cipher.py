"""The cryptography of personal data: data keys, their wrapping, field tokens, the blind index.

- A **data key** (AES-256-GCM) per data subject encrypts that subject's personal fields.
- The **key-encryption key** (KEK, from settings) wraps every data key (AES-256-GCM, the key
  id as associated data); only wrapped keys are stored (`ledger.privacy.keystore`).
- A personal field is stored as a **token**: ``"\\x01pd1.<key id hex>.<base64url(nonce|ciphertext)>"``.
  The leading U+0001 is a character every command model refuses, so a producer can never send
  a string that reads as a token. The nonce is synthetic (HMAC of the plain text under a key
  derived from the data key), so the same value under the same key gives the same token: a
  re-appended event is byte-identical (the store's idempotent re-append compares content),
  and equal values are visible as equal only within one subject's own key.
- The **blind index** of an email is HMAC-SHA256 under a key derived from the KEK: erasure by
  email finds the subject without the store ever holding the address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "TOKEN_PREFIX",
    "DataKey",
    "Keyring",
    "decrypt_token",
    "encrypt_value",
    "is_token",
    "token_json_bound",
    "token_key_id",
]

TOKEN_PREFIX = "\x01pd1."  # noqa: S105 - a marker, not a secret
_PREFIX_LEN = len(TOKEN_PREFIX)
_NONCE = 12
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_MEMO_MAX = 64


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class DataKey:
    """One subject's data key, unwrapped (kept in memory only)."""

    key_id: UUID
    raw: bytes = field(repr=False)
    aead: AESGCM = field(init=False, repr=False, compare=False)
    nonce_key: bytes = field(init=False, repr=False, compare=False)
    prefix: str = field(init=False, repr=False, compare=False)
    aad: bytes = field(init=False, repr=False, compare=False)
    #: Recent tokens by plain text: a details change re-seals mostly unchanged values, and a
    #: customer's next order the same ones. Bounded; lives as long as the key (the codec's cache).
    sealed: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aead", AESGCM(self.raw))
        object.__setattr__(self, "nonce_key", _derive(self.raw, b"ledger pd1 nonce"))
        object.__setattr__(self, "prefix", f"{TOKEN_PREFIX}{self.key_id.hex}.")
        object.__setattr__(self, "aad", self.key_id.bytes)
        object.__setattr__(self, "sealed", {})

    @classmethod
    def generate(cls, key_id: UUID) -> DataKey:
        return cls(key_id, AESGCM.generate_key(bit_length=256))


def encrypt_value(key: DataKey, plaintext: str) -> str:
    """The token of `plaintext` under `key` (deterministic: same key and text, same token)."""
    memo = key.sealed
    token = memo.get(plaintext)
    if token is not None:
        return token
    data = plaintext.encode()
    nonce = hmac.digest(key.nonce_key, data, "sha256")[:_NONCE]  # one C call (hmac.new is ~5x slower)
    body = binascii.b2a_base64(nonce + key.aead.encrypt(nonce, data, key.aad), newline=False)
    token = key.prefix + body.translate(_URLSAFE).rstrip(b"=").decode()
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[plaintext] = token
    return token


#: The token's JSON text besides its sealed body: the quotes, the prefix (U+0001 is written
#: `\u0001`: 6 bytes), the key id and its dot.
_TOKEN_JSON_FIXED = 2 + 6 + (_PREFIX_LEN - 1) + 32 + 1
_SEAL_OVERHEAD = _NONCE + 16  # the nonce and the GCM tag


def token_json_bound(plain_bytes: int) -> int:
    """The length of a token's JSON text (quotes included) for a plain text of `plain_bytes`
    UTF-8 bytes: what a sealed field weighs in a stored row and a published message."""
    return _TOKEN_JSON_FIXED + (4 * (plain_bytes + _SEAL_OVERHEAD) + 2) // 3


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def token_key_id(token: str) -> UUID | None:
    """The id of the key a token was sealed with (None: not a well-formed token)."""
    try:
        return UUID(hex=token[_PREFIX_LEN : _PREFIX_LEN + 32])
    except ValueError:
        return None


def decrypt_token(key: DataKey, token: str) -> str | None:
    """The plain text of a token, or None when it does not open under `key` (forged or damaged)."""
    body = token[_PREFIX_LEN + 33 :]
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return key.aead.decrypt(blob[:_NONCE], blob[_NONCE:], key.aad).decode()
    except (InvalidTag, ValueError, binascii.Error):
        return None


class Keyring:
    """The key-encryption key: wraps and unwraps data keys, and keys the email blind index."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ValueError("the key-encryption key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(kek)
        self.kek_id = hashlib.sha256(b"ledger kek id\x00" + kek).hexdigest()[:16]
        self._index_key = _derive(kek, b"ledger blind index v1")

    @classmethod
    def from_base64(cls, text: str) -> Keyring:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the key-encryption key is not valid base64") from exc
        return cls(raw)

    @staticmethod
    def generate_base64() -> str:
        """A fresh key-encryption key, as settings take it (what `ledger dev` writes)."""
        return base64.b64encode(os.urandom(32)).decode()

    def wrap(self, key: DataKey) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, key.raw, key.key_id.bytes)

    def unwrap(self, key_id: UUID, wrapped: bytes) -> DataKey:
        raw = self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], key_id.bytes)
        return DataKey(key_id, raw)

    def blind_index(self, email: str) -> str:
        """The keyed blind index of an email address (trimmed, case-folded)."""
        return hmac.digest(self._index_key, email.strip().casefold().encode(), "sha256").hex()

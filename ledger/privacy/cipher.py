"""The cryptography of personal data: data keys, their wrapping, field tokens, the blind index.

- A **data key** (AES-256-GCM) per data subject encrypts that subject's personal fields.
- The **key-encryption key** (KEK, from settings) wraps every data key (AES-256-GCM, the key
  id as associated data); only wrapped keys are stored (`ledger.privacy.keystore`).
- Personal data is stored as **tokens**: ``"\\x01pd<v>.<key id hex>.<base64url(nonce|ciphertext)>"``.
  A *value token* (``pd1``) seals one string. A *part token* (``pd2``) seals the JSON object of
  a part's personal strings (a customer's, an address's) in one go: 23 per-field tokens made an
  `OrderPlaced` row 2.5x larger (each token costs ~80 bytes: key id, nonce, tag), and the
  larger rows, not the AES, were most of sealing's cost (docs/privacy.md#costs). The part
  token sits in the part's first sealed field, its other sealed fields are stored as null, and
  opening merges the object back into those fields (`ledger.privacy.codec`). Stored ``pd1``
  tokens of every field (the form before part tokens) still open.
  The leading U+0001 is a character every command model refuses, so a producer can never send
  a string that reads as a token. The nonce is synthetic (HMAC of the plain text under a key
  derived from the data key, one derived key per token kind), so the same value under the same
  key gives the same token: a re-appended event is byte-identical (the store's idempotent
  re-append compares content), and equal values are visible as equal only within one subject's
  own key. The kinds differ in nonce key and associated data, so a body never opens as the
  other kind.
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

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "PART_PREFIX",
    "TOKEN_MARK",
    "TOKEN_PREFIX",
    "DataKey",
    "Keyring",
    "decrypt_part",
    "decrypt_token",
    "encrypt_part",
    "encrypt_value",
    "is_token",
    "token_json_bound",
    "token_key_id",
]

TOKEN_MARK = "\x01pd"  # noqa: S105 - what every token starts with (a marker, not a secret)
TOKEN_PREFIX = "\x01pd1."  # noqa: S105 - a value token
PART_PREFIX = "\x01pd2."  # a part token
_PREFIX_LEN = len(TOKEN_PREFIX)
assert len(PART_PREFIX) == _PREFIX_LEN  # token_key_id and the body's offset serve both kinds
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
    part_nonce_key: bytes = field(init=False, repr=False, compare=False)
    part_prefix: str = field(init=False, repr=False, compare=False)
    part_aad: bytes = field(init=False, repr=False, compare=False)
    #: Recent tokens by plain text: a details change re-seals mostly unchanged values, and a
    #: customer's next order the same ones. Bounded; lives as long as the key (the codec's cache).
    sealed: dict[str, str] = field(init=False, repr=False, compare=False)
    #: The same for part tokens, by the part's JSON.
    sealed_parts: dict[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aead", AESGCM(self.raw))
        object.__setattr__(self, "nonce_key", _derive(self.raw, b"ledger pd1 nonce"))
        object.__setattr__(self, "prefix", f"{TOKEN_PREFIX}{self.key_id.hex}.")
        object.__setattr__(self, "aad", self.key_id.bytes)
        object.__setattr__(self, "part_nonce_key", _derive(self.raw, b"ledger pd2 nonce"))
        object.__setattr__(self, "part_prefix", f"{PART_PREFIX}{self.key_id.hex}.")
        object.__setattr__(self, "part_aad", self.key_id.bytes + b"pd2")
        object.__setattr__(self, "sealed", {})
        object.__setattr__(self, "sealed_parts", {})

    @classmethod
    def generate(cls, key_id: UUID) -> DataKey:
        return cls(key_id, AESGCM.generate_key(bit_length=256))


def encrypt_value(key: DataKey, plaintext: str) -> str:
    """The token of `plaintext` under `key` (deterministic: same key and text, same token)."""
    memo = key.sealed
    token = memo.get(plaintext)
    if token is not None:
        return token
    token = key.prefix + _seal_body(key, plaintext.encode(), key.nonce_key, key.aad)
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[plaintext] = token
    return token


def encrypt_part(key: DataKey, values: dict[str, str]) -> str:
    """The part token of `values` (a part's personal strings, in a fixed order) under `key`;
    deterministic like `encrypt_value`."""
    data = orjson.dumps(values)
    memo = key.sealed_parts
    token = memo.get(data)
    if token is not None:
        return token
    token = key.part_prefix + _seal_body(key, data, key.part_nonce_key, key.part_aad)
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[data] = token
    return token


def _seal_body(key: DataKey, data: bytes, nonce_key: bytes, aad: bytes) -> str:
    nonce = hmac.digest(nonce_key, data, "sha256")[:_NONCE]  # one C call (hmac.new is ~5x slower)
    body = binascii.b2a_base64(nonce + key.aead.encrypt(nonce, data, aad), newline=False)
    return body.translate(_URLSAFE).rstrip(b"=").decode()


#: The token's JSON text besides its sealed body: the quotes, the prefix (U+0001 is written
#: `\u0001`: 6 bytes), the key id and its dot.
_TOKEN_JSON_FIXED = 2 + 6 + (_PREFIX_LEN - 1) + 32 + 1
_SEAL_OVERHEAD = _NONCE + 16  # the nonce and the GCM tag


def token_json_bound(plain_bytes: int) -> int:
    """The length of a token's JSON text (quotes included) for a plain text of `plain_bytes`
    UTF-8 bytes: what a sealed field weighs in a stored row and a published message."""
    return _TOKEN_JSON_FIXED + (4 * (plain_bytes + _SEAL_OVERHEAD) + 2) // 3


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_MARK)


def token_key_id(token: str) -> UUID | None:
    """The id of the key a token was sealed with (None: not a well-formed token)."""
    try:
        return UUID(hex=token[_PREFIX_LEN : _PREFIX_LEN + 32])
    except ValueError:
        return None


def decrypt_token(key: DataKey, token: str) -> str | None:
    """The plain text of a value token, or None when it does not open under `key` (forged or damaged)."""
    data = _open_body(key, token, key.aad)
    try:
        return None if data is None else data.decode()
    except ValueError:
        return None


def decrypt_part(key: DataKey, token: str) -> dict[str, str | None] | None:
    """The values of a part token, or None when it does not open under `key` (forged or damaged)."""
    data = _open_body(key, token, key.part_aad)
    if data is None:
        return None
    try:
        values = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return values if isinstance(values, dict) else None


def _open_body(key: DataKey, token: str, aad: bytes) -> bytes | None:
    body = token[_PREFIX_LEN + 33 :]
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return key.aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
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

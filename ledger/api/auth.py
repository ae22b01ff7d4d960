"""Bearer tokens: opaque 256-bit random strings, stored as SHA-256, each with scopes.

`TokenStore.create` is what `ledger tokens create` calls (the token is shown once and never
stored). `TokenStore.authenticate` looks the hash up, with a short in-process cache so the hot
path costs no extra round trip; a revoked token stops working within `cache_ttl_s`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID, uuid4

import asyncpg

SCOPES = ("orders:write", "orders:read", "audit:read", "admin", "privacy:admin")
TOKEN_PREFIX = "lgr_"  # noqa: S105 - a prefix that makes leaked tokens greppable, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `name` is recorded as the actor, `client_id` scopes idempotency keys."""

    token_id: str
    name: str
    client_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """`admin` implies every scope."""
        return scope in self.scopes or "admin" in self.scopes


def hash_token(token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator(Protocol):
    """What a request needs of the tokens: a principal for a bearer token (`TokenStore` in
    production; unit tests of the routes pass a fixed table)."""

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of an active token, or None."""
        ...


class TokenStore:
    """Tokens in the `api_tokens` table (migration 0020)."""

    def __init__(self, pool: asyncpg.Pool, cache_ttl_s: float = 10.0) -> None:
        self._pool = pool
        self._ttl = cache_ttl_s
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._by_id: dict[str, tuple[float, Principal | None]] = {}

    async def create(
        self, name: str, scopes: Iterable[str], client_id: str | None = None
    ) -> tuple[str, Principal]:
        """Make a token; returns `(token, principal)`. The token is not retrievable afterwards."""
        wanted = sorted(set(scopes))
        unknown = [s for s in wanted if s not in SCOPES]
        if unknown or not wanted:
            raise ValueError(
                f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {unknown or 'none'}"
            )
        if not name.strip():
            raise ValueError("token name must not be empty")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = uuid4()
        await self._pool.execute(
            "INSERT INTO api_tokens (token_id, name, client_id, token_hash, scopes) VALUES ($1, $2, $3, $4, $5)",
            token_id,
            name,
            client_id or name,
            hash_token(token),
            wanted,
        )
        return token, Principal(str(token_id), name, client_id or name, frozenset(wanted))

    async def revoke(self, token_id: UUID) -> bool:
        """Revoke a token by id; True if it existed and was active."""
        status = await self._pool.execute(
            "UPDATE api_tokens SET revoked_at = clock_timestamp() WHERE token_id = $1 AND revoked_at IS NULL",
            token_id,
        )
        self._cache.clear()
        self._by_id.clear()
        return bool(status.endswith(" 1"))

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of an active token, or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool.fetchrow(
            "SELECT token_id, name, client_id, scopes FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            digest,
        )
        principal = (
            None
            if row is None
            else Principal(str(row["token_id"]), row["name"], row["client_id"], frozenset(row["scopes"]))
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
        return principal

    async def principal_by_id(self, token_id: str) -> Principal | None:
        """The principal of an active token named by its id (the console's session names its
        token this way, never by the secret), or None; cached like `authenticate`."""
        try:
            key = UUID(token_id)
        except ValueError:
            return None
        now = time.monotonic()
        hit = self._by_id.get(token_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool.fetchrow(
            "SELECT token_id, name, client_id, scopes FROM api_tokens WHERE token_id = $1 AND revoked_at IS NULL",
            key,
        )
        principal = (
            None
            if row is None
            else Principal(str(row["token_id"]), row["name"], row["client_id"], frozenset(row["scopes"]))
        )
        if len(self._by_id) > 10_000:
            self._by_id.clear()
        self._by_id[token_id] = (now + self._ttl, principal)
        return principal

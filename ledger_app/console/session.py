"""Console sessions: a signed, HttpOnly, SameSite=Strict cookie naming the signed-in token, and CSRF.

Sign-in takes an API token (the same tokens and scopes as the HTTP API, `ledger.api.auth`).
The cookie holds the token's id, a CSRF secret and the sign-in time, signed with itsdangerous
(`URLSafeTimedSerializer`: tampering or expiry is a signed-out visitor); never the token itself.
Each request looks the token up by id again (`TokenStore.principal_by_id`, cached like bearer
lookups), so a revoked token ends its console sessions as it ends its API calls.

CSRF: every POST carries the session's CSRF secret (a hidden `csrf` field, or the `X-CSRF-Token`
header htmx sends) and is refused with 403 without it; SameSite=Strict is the second line. The
sign-in form, before any session exists, uses a double-submit cookie (`console_signin`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "console_session"
SIGNIN_COOKIE = "console_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Session:
    """What the cookie carries once decoded."""

    token_id: str
    csrf: str


class SessionCodec:
    """Signs and reads the console's cookies (one key per deployment, `console.session_secret`)."""

    def __init__(self, secret: str | None, max_age_s: int) -> None:
        self._signer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt="ledger-console")
        self._signin = URLSafeTimedSerializer(self._signer.secret_key, salt="ledger-console-signin")
        self.max_age_s = max_age_s

    def issue(self, token_id: str) -> tuple[str, Session]:
        """A new session for a token: the cookie value and the session (fresh CSRF secret)."""
        session = Session(token_id, secrets.token_urlsafe(24))
        return self._signer.dumps({"t": token_id, "c": session.csrf}), session

    def read(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None (absent, tampered with, expired)."""
        if not cookie:
            return None
        try:
            data: Any = self._signer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), str) or not isinstance(data.get("c"), str):
            return None
        return Session(data["t"], data["c"])

    def signin_nonce(self) -> tuple[str, str]:
        """The sign-in form's CSRF value and the signed cookie holding it."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._signin.dumps(nonce)

    def signin_nonce_ok(self, cookie: str | None, given: str | None) -> bool:
        """True when the form's value matches the sign-in cookie (issued in the last hour)."""
        if not cookie or not given:
            return False
        try:
            nonce: Any = self._signin.loads(cookie, max_age=3600)
        except BadSignature:
            return False
        return isinstance(nonce, str) and secrets.compare_digest(nonce.encode(), given.encode())


def csrf_ok(session: Session, given: str | None) -> bool:
    """Constant-time comparison of a submitted CSRF value with the session's."""
    return given is not None and secrets.compare_digest(session.csrf.encode(), given.encode())

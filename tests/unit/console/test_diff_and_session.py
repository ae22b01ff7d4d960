"""The console's pure parts: what an event changed, and its signed session cookies."""

from __future__ import annotations

from ledger_app.console.diff import Change, diff
from ledger_app.console.session import SessionCodec, csrf_ok


def test_a_diff_names_each_changed_leaf_by_path_and_records_by_their_id() -> None:
    before = {
        "version": 1,
        "status": "pending",
        "payments": {"captured": "0.00", "entries": []},
        "items": [{"line_id": "A", "quantity": 1}, {"line_id": "B", "quantity": 2}],
    }
    after = {
        "version": 2,
        "status": "pending",
        "payments": {"captured": "10.00", "entries": [{"kind": "captured", "amount": "10.00", "method": None}]},
        "items": [{"line_id": "B", "quantity": 3}],
    }
    changes = {c.path: c for c in diff(before, after)}
    assert changes["payments.captured"] == Change("payments.captured", "0.00", "10.00")
    assert changes["payments.entries[0].kind"].kind == "added"
    assert "payments.entries" not in changes, "the entries are the change, not the list that was empty"
    assert "payments.entries[0].method" not in changes, "a new record's empty fields are noise"
    assert changes["items[B].quantity"] == Change("items[B].quantity", "2", "3"), "lines compare by id"
    assert changes["items[A].quantity"].kind == "removed"
    assert "version" not in changes
    assert "status" not in changes


def test_the_first_event_shows_the_fields_it_set() -> None:
    changes = diff(None, {"id": "o1", "note": None, "tags": [], "total": "5.00"})
    assert [(c.path, c.after) for c in changes] == [("id", "o1"), ("total", "5.00")]


def test_a_session_cookie_is_signed_and_carries_no_token() -> None:
    codec = SessionCodec("k" * 32, max_age_s=60)
    cookie, session = codec.issue("token-id-1")
    read = codec.read(cookie)
    assert read == session
    assert read is not None
    assert csrf_ok(read, session.csrf)
    assert not csrf_ok(session, "wrong")
    assert not csrf_ok(session, None)
    assert codec.read(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None, "tampered"
    assert SessionCodec("x" * 32, max_age_s=60).read(cookie) is None, "another deployment's key"
    assert codec.read(None) is None
    assert codec.read("garbage") is None


def test_the_sign_in_form_value_must_match_its_cookie() -> None:
    codec = SessionCodec("k" * 32, max_age_s=60)
    nonce, cookie = codec.signin_nonce()
    assert codec.signin_nonce_ok(cookie, nonce)
    other, _ = codec.signin_nonce()
    assert not codec.signin_nonce_ok(cookie, other)
    assert not codec.signin_nonce_ok(None, nonce)

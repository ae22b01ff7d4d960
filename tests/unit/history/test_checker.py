"""The history checker finds each kind of anomaly in a crafted history, so a tier built on it
cannot pass by finding nothing."""

from __future__ import annotations

from tests.history.checker import Expected, History, Record, Write, check, collapse

STATES = ("pending", "processing", "fulfilled", "delivered")


def _clean(**overrides: object) -> History:
    """Two orders at two destinations, every effect exactly once, in order."""
    values: dict[str, object] = {
        "placed": {"CART-1": ["o1"], "CART-2": ["o2"]},
        "expected": {
            ("omneo", "o1"): Expected(STATES, frozenset({"o1:S1"})),
            ("omneo", "o2"): Expected(STATES[:2]),
            ("omnisend", "o1"): Expected(("unpaid", "paid")),
            ("omnisend", "o2"): Expected(("unpaid",)),
        },
        "writes": [
            Write("omneo", "o1", "create", "pending"),
            Write("omnisend", "o1", "create", "unpaid"),
            Write("omneo", "o2", "create", "pending"),
            Write("omneo", "o1", "update", "processing"),
            Write("omneo", "o1", "update", "fulfilled"),
            Write("omneo", "o2", "update", "processing"),
            Write("omnisend", "o2", "create", "unpaid"),
            Write("omnisend", "o1", "update", "paid"),
            Write("omneo", "o1", "update", "delivered"),
        ],
        "records": [Record("omneo", "o1", "o1:S1")],
    }
    values.update(overrides)
    return History(**values)  # type: ignore[arg-type]


def _writes_without(*drop: Write) -> list[Write]:
    writes = list(_clean().writes)
    for write in drop:
        writes.remove(write)
    return writes


def test_a_clean_history_counts_nothing() -> None:
    report = check(_clean())
    assert report.ok
    assert report.counts() == {"lost": 0, "duplicated": 0, "reordered": 0, "stuck": 0}


def test_skipped_states_and_a_redelivered_state_are_not_anomalies() -> None:
    writes = [w for w in _clean().writes if w != Write("omneo", "o1", "update", "processing")]
    writes.append(Write("omneo", "o1", "update", "delivered"))  # redelivered after a crash
    writes.append(Write("omneo", "o1", "update", None))  # a write that carries no state
    assert check(_clean(writes=writes)).ok


def test_an_acknowledged_order_missing_from_the_ledger_is_lost() -> None:
    report = check(_clean(placed={"CART-1": ["o1"], "CART-2": ["o2"], "CART-3": []}))
    assert report.counts()["lost"] == 1
    assert "CART-3" in report.lost[0]


def test_an_order_the_ledger_holds_twice_is_duplicated() -> None:
    report = check(_clean(placed={"CART-1": ["o1", "o9"], "CART-2": ["o2"]}))
    assert report.counts() == {"lost": 0, "duplicated": 1, "reordered": 0, "stuck": 0}
    assert "CART-1" in report.duplicated[0]


def test_an_order_never_created_at_a_destination_is_lost() -> None:
    writes = [w for w in _clean().writes if (w.destination, w.order_id) != ("omnisend", "o2")]
    report = check(_clean(writes=writes))
    assert report.counts() == {"lost": 1, "duplicated": 0, "reordered": 0, "stuck": 0}
    assert report.lost == ["omnisend o2: never created"]


def test_an_order_created_twice_at_a_destination_is_duplicated() -> None:
    writes = [*_clean().writes, Write("omneo", "o2", "create", "processing")]
    report = check(_clean(writes=writes))
    assert report.counts() == {"lost": 0, "duplicated": 1, "reordered": 0, "stuck": 0}
    assert report.duplicated == ["omneo o2: created 2 times"]


def test_a_transaction_created_twice_is_duplicated_and_a_missing_one_is_lost() -> None:
    twice = check(_clean(records=[Record("omneo", "o1", "o1:S1")] * 2))
    assert twice.counts() == {"lost": 0, "duplicated": 1, "reordered": 0, "stuck": 0}
    missing = check(_clean(records=[]))
    assert missing.counts() == {"lost": 1, "duplicated": 0, "reordered": 0, "stuck": 0}
    assert missing.lost == ["omneo o1: record o1:S1 missing"]


def test_a_record_the_ledger_never_derived_is_duplicated() -> None:
    report = check(_clean(records=[Record("omneo", "o1", "o1:S1"), Record("omneo", "o1", "o1:S2")]))
    assert report.counts()["duplicated"] == 1


def test_effects_for_an_order_the_ledger_lacks_are_duplicated() -> None:
    writes = [*_clean().writes, Write("omnisend", "o9", "create", "unpaid")]
    report = check(_clean(writes=writes, records=[*_clean().records, Record("omneo", "o9", "o9:S1")]))
    assert report.counts() == {"lost": 0, "duplicated": 2, "reordered": 0, "stuck": 0}


def test_an_older_state_after_a_newer_one_is_reordered() -> None:
    writes = [*_clean().writes, Write("omneo", "o1", "update", "fulfilled")]  # after delivered
    report = check(_clean(writes=writes))
    assert report.counts() == {"lost": 0, "duplicated": 0, "reordered": 1, "stuck": 0}
    assert report.reordered == ["omneo o1: received 'fulfilled' after 'delivered'"]


def test_a_state_the_order_never_had_is_reordered() -> None:
    writes = [*_clean().writes, Write("omnisend", "o2", "update", "refunded")]
    report = check(_clean(writes=writes))
    assert report.counts()["reordered"] == 1
    assert "never had" in report.reordered[0]


def test_one_reordered_order_counts_once() -> None:
    writes = [
        *_clean().writes,
        Write("omneo", "o1", "update", "pending"),
        Write("omneo", "o1", "update", "processing"),
    ]
    assert check(_clean(writes=writes)).counts()["reordered"] == 1


def test_an_order_short_of_its_final_state_is_stuck() -> None:
    writes = _writes_without(Write("omneo", "o1", "update", "delivered"))
    report = check(_clean(writes=writes))
    assert report.counts() == {"lost": 0, "duplicated": 0, "reordered": 0, "stuck": 1}
    assert report.stuck == ["omneo o1: at 'fulfilled', the ledger's final state is 'delivered'"]


def test_every_kind_at_once_is_counted_separately() -> None:
    writes = [
        *_writes_without(
            Write("omnisend", "o1", "update", "paid"),  # stuck
            Write("omnisend", "o2", "create", "unpaid"),  # lost
        ),
        Write("omneo", "o2", "create", "processing"),  # duplicated
        Write("omneo", "o1", "update", "processing"),  # reordered
    ]
    report = check(_clean(writes=writes))
    assert report.counts() == {"lost": 1, "duplicated": 1, "reordered": 1, "stuck": 1}
    assert not report.ok
    assert "lost=1 duplicated=1 reordered=1 stuck=1" in report.summary()


def test_collapse_drops_consecutive_repeats_only() -> None:
    assert collapse(["a", "a", "b", "b", "a", "c"]) == ("a", "b", "a", "c")
    assert collapse([]) == ()

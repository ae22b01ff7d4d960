"""`check_holds`: when what the broker shows means it lost records the relay had acknowledged."""

from __future__ import annotations

import pytest

from ledger.relay.topics import BrokerDataLost, TopicView, check_holds


def test_a_missing_topic_is_lost_only_when_something_was_acknowledged_on_it() -> None:
    check_holds("t", TopicView(None, {}), 3, {})  # never published: the relay may create it
    with pytest.raises(BrokerDataLost) as lost:
        check_holds("t", TopicView(None, {}), 3, {0: 5})
    assert lost.value.reason == "topic_missing"


def test_another_partition_count_is_a_stop_even_with_nothing_acknowledged() -> None:
    with pytest.raises(BrokerDataLost) as lost:
        check_holds("t", TopicView(4, {0: 0, 1: 0, 2: 0, 3: 0}), 3, {})
    assert lost.value.reason == "partitions_changed"
    assert "has 4 partitions, the settings say 3" in lost.value.detail


def test_end_offsets_below_the_acknowledged_ones_name_the_partitions_that_lost_records() -> None:
    check_holds("t", TopicView(3, {0: 7, 1: 2, 2: 0}), 3, {0: 7, 1: 1})  # at or past: held
    with pytest.raises(BrokerDataLost) as lost:
        check_holds("t", TopicView(3, {0: 7, 1: 0, 2: 0}), 3, {0: 7, 1: 1, 2: 0})
    assert lost.value.reason == "offsets_regressed"
    assert lost.value.facts["partitions"] == [1]

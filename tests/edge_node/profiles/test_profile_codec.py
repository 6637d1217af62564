"""The profile codec: decayed frequency, the bounds, the merge with the origin's summary, and refusal of bytes that
are not a profile; and the record cipher's binding to the pseudonym."""

from __future__ import annotations

import pytest

from edge_node.profiles import CorruptRecord, Profile, ProfileCodec, ProfileEvent
from edge_node.profiles.codec import HALF_LIFE_S, MAX_ENCODED_BYTES, MAX_ITEM_CHARS, MAX_ITEMS, MAX_RECENT
from edge_node.profiles.crypto import RecordCipher, derive_profile_key

T0 = 1_700_000_000
codec = ProfileCodec()


def test_the_decayed_frequency_weighs_kinds_and_halves_every_half_life() -> None:
    record = codec.apply(Profile(), ProfileEvent("purchase", ("A",), T0))
    record = codec.apply(record, ProfileEvent("add_to_cart", ("A",), T0 + HALF_LIFE_S))
    assert record.decayed_at("A", T0 + HALF_LIFE_S) == pytest.approx(0.5 + 0.5)
    assert record.decayed_at("A", T0 + 2 * HALF_LIFE_S) == pytest.approx(0.5)
    assert record.items["A"].count == 2 and record.items["A"].first_seen == T0
    late = codec.apply(record, ProfileEvent("click", ("A",), T0))  # arrives late: decays from its own time
    assert late.decayed_at("A", T0 + HALF_LIFE_S) == pytest.approx(1.0 + 0.125)
    assert late.items["A"].last_seen == T0 + HALF_LIFE_S


def test_a_full_profile_of_the_longest_ids_encodes_within_its_stated_bound() -> None:
    record = Profile()
    for i in range(MAX_ITEMS + 10):
        item = f"{i:0{MAX_ITEM_CHARS}d}"
        record = codec.apply(record, ProfileEvent("purchase", (item,), 2**32 - 1 - i))
    data = codec.encode(record)
    assert len(record.recent) == MAX_RECENT and len(record.items) == MAX_ITEMS
    assert MAX_ENCODED_BYTES * 0.9 < len(data) <= MAX_ENCODED_BYTES
    assert codec.decode(data) == record


def test_past_the_item_bound_the_item_with_the_lowest_decayed_frequency_goes() -> None:
    record = codec.apply(Profile(), ProfileEvent("purchase", ("old-favourite",) * 3, T0))  # 3 purchases, long ago
    for i in range(MAX_ITEMS - 1):
        record = codec.apply(record, ProfileEvent("click", (f"glance-{i}",), T0 + HALF_LIFE_S))
    record = codec.apply(record, ProfileEvent("click", ("newest",), T0 + HALF_LIFE_S))
    # old-favourite: 3 halved once = 1.5 > each click's 0.25; the first glance (tied, oldest id) went.
    assert "old-favourite" in record.items and "newest" in record.items
    assert len(record.items) == MAX_ITEMS
    assert sum(1 for i in range(MAX_ITEMS - 1) if f"glance-{i}" not in record.items) == 1


def test_merging_the_origins_summary_keeps_only_the_local_events_after_it() -> None:
    local = Profile()
    for ts, item in ((T0, "A"), (T0 + 10, "B"), (T0 + 20, "C")):
        local = codec.apply(local, ProfileEvent("purchase", (item,), ts))
    summary = codec.apply(
        codec.apply(Profile(), ProfileEvent("purchase", ("A",), T0)), ProfileEvent("purchase", ("B",), T0 + 10)
    )  # the origin saw A and B
    merged = codec.merge(local, summary, T0 + 10)
    assert merged.recent_items() == ["A", "B", "C"]
    assert {item: s.count for item, s in merged.items.items()} == {"A": 1, "B": 1, "C": 1}
    assert codec.merge(None, summary, T0 + 10) == summary


@pytest.mark.parametrize(
    "event, message",
    [
        (ProfileEvent("impression", ("A",), T0), "not 'impression'"),
        (ProfileEvent("purchase", (), T0), "at least one item"),
        (ProfileEvent("purchase", ("x" * (MAX_ITEM_CHARS + 1),), T0), "item ids have"),
        (ProfileEvent("purchase", ("A",), float("nan")), "not a Unix time"),
    ],
)
def test_an_event_a_profile_cannot_take_is_refused(event: ProfileEvent, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.apply(Profile(), event)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00garbage",
        b"\x92\x90\x80\x01",
        codec.encode(Profile())[:-1] + b"\xc1",
        # a profile past its bound (65 recent events) is refused too
        b"\x92\xdc\x00\x41" + b"\x93\x00\xa1A\x01" * 65 + b"\x80",
    ],
)
def test_bytes_that_are_not_a_profile_are_refused(data: bytes) -> None:
    with pytest.raises(CorruptRecord):
        codec.decode(data)


def test_a_sealed_record_opens_only_under_its_own_pseudonym_and_key() -> None:
    cipher = RecordCipher(derive_profile_key("the-deployment-secret"))
    sealed = cipher.seal("a" * 32, b"profile bytes")
    assert cipher.open("a" * 32, sealed) == b"profile bytes"
    with pytest.raises(CorruptRecord, match="does not decrypt"):
        cipher.open("b" * 32, sealed)  # copied under another shopper
    with pytest.raises(CorruptRecord, match="does not decrypt"):
        RecordCipher(derive_profile_key("another-secret")).open("a" * 32, sealed)
    assert derive_profile_key("the-deployment-secret") != derive_profile_key("another-secret")

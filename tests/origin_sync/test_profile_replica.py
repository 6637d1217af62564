"""Profile changes at the replica: taken from a verified delta batch in version order, an erasure for a summary of
another region, refused when malformed; the wire summary is the edge codec's record and folds as its `apply`."""

from __future__ import annotations

import pytest

from edge_node.profiles.codec import ProfileCodec
from edge_node.profiles.interface import ProfileEvent as EdgeEvent
from origin_sync.replica.state import apply_deltas, profiles_from_page
from origin_sync.wire.events import pseudonym_key, pseudonymize
from origin_sync.wire.profiles import ProfileChange, ProfileEvent, encode_summary, fold
from origin_sync.wire.protocol import PROTOCOL_VERSION, IntegrityError
from tests.origin_sync.test_replica import _batch, _replica, signed_at

KEY = pseudonym_key("s")
ANNA, BEN = pseudonymize(KEY, "anna"), pseudonymize(KEY, "ben")
EVENTS = [
    ProfileEvent("k1", "purchase", "10001", 1_300_000_000),
    ProfileEvent("k2", "click", "10002", 1_300_000_100),
    ProfileEvent("k3", "add_to_cart", "10001", 1_300_000_200),
]


def _summary_change(version: int, pseudonym: str, regions: list[str]) -> dict:
    summary, ts = fold(EVENTS)
    return {
        "version": version,
        "op": "profile_upsert",
        "pseudonym": pseudonym,
        "summary": encode_summary(summary),
        "summary_ts": ts,
        "regions": regions,
    }


def test_the_wire_fold_is_the_edge_codecs_apply_and_decodes_as_its_record():
    codec = ProfileCodec()
    by_codec = codec.empty()
    for event in EVENTS:
        by_codec = codec.apply(by_codec, EdgeEvent(event.kind, (event.item,), event.ts))
    summary, ts = fold(reversed(EVENTS))  # the order of arrival does not matter
    assert codec.decode(encode_summary(summary)) == by_codec and ts == 1_300_000_200
    # The edge's local events after summary_ts stay on top of the origin's summary.
    local = codec.apply(by_codec, EdgeEvent("purchase", ("99999",), 1_300_000_500))
    merged = codec.merge(local, codec.decode(encode_summary(summary)), ts)
    assert merged.items["99999"].count == 1 and merged.items["10001"].count == 2


def test_profile_changes_of_a_batch_reach_the_replica_in_version_order():
    old = _replica()
    batch = _batch(
        old,
        [
            _summary_change(4, ANNA, ["GB"]),
            _summary_change(5, BEN, ["DE", "GB"]),
            {"version": 6, "op": "profile_erase", "pseudonym": ANNA},
        ],
    )
    new = apply_deltas(old, signed_at(batch, old))
    assert [(c.pseudonym, c.summary is None) for c in new.profile_changes] == [
        (ANNA, False),
        (BEN, False),
        (ANNA, True),
    ]
    assert new.state_digest == old.state_digest  # profiles are the store's, not the served state's
    # A summary for shoppers of other regions only is, for this edge, an erasure.
    other = apply_deltas(old, signed_at(_batch(old, [_summary_change(4, ANNA, ["DE"])]), old))
    assert other.profile_changes == (ProfileChange(ANNA, None, 0.0),)


def test_a_malformed_profile_change_is_refused():
    old = _replica()
    for bad in ({"pseudonym": "not-a-pseudonym"}, {"summary": "text"}):
        change = {**_summary_change(4, ANNA, ["GB"]), **bad}
        with pytest.raises(IntegrityError):
            apply_deltas(old, _batch(old, [change]))


def test_a_profile_page_must_follow_the_one_asked_for():
    summary = encode_summary(fold(EVENTS)[0])
    first, second = sorted([ANNA, BEN])
    page = {
        "protocol": PROTOCOL_VERSION,
        "kind": "profiles",
        "regions": ["GB"],
        "after": "",
        "version": 9,
        "profiles": [[first, summary, 5]],
        "next": first,
    }
    changes, following = profiles_from_page(page, ("GB",), "")
    assert changes == [ProfileChange(first, summary, 5.0)] and following == first
    with pytest.raises(IntegrityError):
        profiles_from_page(page, ("GB",), second)  # a page for another position (replayed)
    with pytest.raises(IntegrityError):
        profiles_from_page({**page, "regions": ["DE"]}, ("GB",), "")
    with pytest.raises(IntegrityError):
        profiles_from_page({**page, "profiles": [[second, summary, 5], [first, summary, 5]], "next": None}, ("GB",), "")


def test_a_batch_of_profiles_only_keeps_the_offers_and_experiments_mappings():
    old = _replica()
    new = apply_deltas(old, signed_at(_batch(old, [_summary_change(4, ANNA, ["GB"])]), old))
    assert new.offers is old.offers and new.experiments is old.experiments and new.version == 4

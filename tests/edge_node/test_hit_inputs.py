"""A shopper's model input reused across their requests (edge_node.shoppers.HitInputs): used only for an equal
record and cart, so a write to the profile is read at once (read-your-writes); bounded; and the row it gives any
model that reads profiles is encode_profile's of the same history, bit for bit."""

from __future__ import annotations

from pathlib import Path

from edge_node.profiles import ProfileEvent
from edge_node.serving import shopper_context
from edge_node.shoppers import HitInputs, history_profile
from models.runtime import Ranker
from tests.edge_node.shopper_support import DAY, NOW, codec, profile_of, request


def test_an_equal_record_reuses_the_input_and_a_written_one_gets_a_new_one() -> None:
    inputs = HitInputs(8)
    record = profile_of(("purchase", "A", NOW - 10 * DAY), ("purchase", "B", NOW - DAY))
    first = shopper_context(request(), record, None, inputs)
    decoded_again = codec.decode(codec.encode(record))  # the store returns a new, equal record each read
    assert shopper_context(request(), decoded_again, None, inputs).hit is first.hit
    written = codec.apply(record, ProfileEvent("purchase", ("C",), NOW - 60))
    after = shopper_context(request(), written, None, inputs)
    assert after.hit is not first.hit and set(after.history.items) == {"A", "B", "C"}
    summary = codec.merge(None, profile_of(("purchase", "A", NOW - 10 * DAY), ("purchase", "B", NOW - DAY)), NOW)
    assert shopper_context(request(), summary, None, inputs).hit is first.hit  # equal content: the same input


def test_a_request_cart_or_a_cart_leaving_the_window_is_not_served_a_stale_input() -> None:
    inputs = HitInputs(8)
    record = profile_of(("purchase", "A", NOW - 10 * DAY), ("add_to_cart", "B", NOW - 3600))
    now = shopper_context(request(), record, None, inputs)
    assert now.history.items["B"].count == 1
    later = shopper_context(request(at=NOW + DAY), record, None, inputs)  # B has left the cart's day
    assert later.hit is not now.hit and "B" not in later.history.items
    with_cart = shopper_context(request(cart=("Z",)), record, None, inputs)
    assert with_cart.history.items["Z"].count == 1 and with_cart.hit is not now.hit


def test_inputs_are_bounded_least_recently_used_first() -> None:
    inputs = HitInputs(2)
    records = [profile_of(("purchase", f"S{i}", NOW - i * DAY)) for i in range(3)]
    first = inputs.get(records[0], ())
    inputs.get(records[1], ())
    assert inputs.get(records[0], ()) is first  # records[0] is now the most recent
    inputs.get(records[2], ())  # evicts records[1]
    assert len(inputs) == 2 and inputs.get(records[0], ()) is first


def test_the_reused_input_encodes_as_encode_profile_for_each_model(bundle_dir: Path, second_bundle_dir: Path) -> None:
    inputs = HitInputs(8)
    record = profile_of(*(("purchase", f"S{i % 5}", NOW - (40 - i) * DAY) for i in range(40)))
    hit = inputs.get(record, ())
    for model in (Ranker.load(bundle_dir), Ranker.load(second_bundle_dir)):
        if not model.reads_profiles:
            continue
        for at in (NOW, NOW + 2.5 * DAY):
            got, expected = hit.encode(model, at), model.encode_profile(history_profile(record), at)
            assert got.width == expected.width
            assert all(a.tobytes() == b.tobytes() for a, b in zip(got.rows(0), expected.rows(0), strict=True))

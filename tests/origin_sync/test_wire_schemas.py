"""The wire schemas (origin_sync/wire: msgspec Structs): the canonical form they produce is byte for byte what was
signed before them, a refusal names the field and says why, and edge and origin take ids by one definition."""

from __future__ import annotations

import hashlib
import json

import pytest

from origin_sync.wire.events import (
    EVENT_FIELDS,
    InvalidEvents,
    decode_batch,
    decode_feedback,
    encode_batch,
    encode_frame,
    encode_frames_batch,
)
from origin_sync.wire.experiments import InvalidExperiment, validate_experiment
from origin_sync.wire.fields import ID_RULE, MAX_ID_CHARS
from origin_sync.wire.offers import InvalidOffer, patched_offer, validate_offer
from origin_sync.wire.protocol import canonical
from tests.events_support import event_row


def test_the_canonical_bytes_of_an_offer_and_an_experiment_are_those_signed_before_the_structs():
    # The digests were computed with the hand-written validators these Structs replaced.
    offer = validate_offer(
        {
            "id": "GB-1",
            "sku": "ab-12",
            "title": "  Mug ",
            "price": 5,
            "currency": "GBP",
            "regions": ["GB", "DE", "GB"],
            "stock": 3,
            "active_from": "2030-01-02",
            "active_to": 1900000000,
            "group": "mugs",
            "boost": 2,
        }
    )
    assert (
        hashlib.sha256(canonical(offer)).hexdigest()
        == "0dc235d56f28dacb47a208b036af16c4adb24faee0323e17e0213ae24c4a1aba"
    )
    experiment = validate_experiment(
        {
            "id": "exp-1",
            "variants": [
                {"name": "control", "weight": 1},
                {"name": "t", "weight": 3, "model": "m-2", "max_per_group": 2, "boosts": {"GB-2": 1, "GB-1": -1.5}},
            ],
            "start": "2026-11-24T00:00:00Z",
            "regions": ["GB", "DE"],
        }
    )
    assert (
        hashlib.sha256(canonical(experiment)).hexdigest()
        == "7e79c25516c8d20f13cc65d80b06805172636dace4497e66b79105c3dbdb0d53"
    )


OFFER = {"id": "o1", "sku": "10001", "title": "Mug", "price": 9.5, "currency": "GBP", "regions": ["GB"]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"price": -1}, "price: a finite number >= 0"),
        ({"price": float("inf")}, "price: a finite number >= 0"),
        ({"price": True}, "price: a finite number >= 0"),
        ({"sku": "a b"}, f"sku: {ID_RULE}"),
        ({"id": "x" * (MAX_ID_CHARS + 1)}, f"id: {ID_RULE}"),
        ({"regions": ["GB", "gbr"]}, "regions: a non-empty list of two-letter market codes"),
        ({"currency": "pounds"}, "currency: a three-letter ISO 4217 code"),
        ({"stock": 2**64}, "stock: an integer >= 0"),
        ({"boost": 101}, "boost: a number between -100 and 100"),
        ({"title": "   "}, "title: a non-empty string of at most 300 characters"),
        ({"active_from": "soon"}, "active_from: 'soon' is not an ISO 8601 date-time"),
        ({"colour": "red", "size": 2}, "unknown field(s): colour, size"),
        ({"title": None, "price": None}, "missing required field(s): title, price "),
    ],
)
def test_a_refused_offer_names_the_field_and_why(change, message):
    with pytest.raises(InvalidOffer) as refused:
        validate_offer({**OFFER, **change})
    assert str(refused.value).startswith(message), str(refused.value)


def test_an_offer_patch_is_checked_member_by_member_then_whole():
    stored = validate_offer(OFFER)
    assert patched_offer(stored, {"price": 3, "group": "mugs"}, "o1") == {**stored, "price": 3.0, "group": "mugs"}
    for patch, message in (
        ({"price": "3"}, "price: a finite number >= 0"),
        ({"colour": 1}, "unknown field(s): colour"),
        ({"title": None}, "missing required field(s): title"),
        ({"id": "o2"}, "id: body says"),
    ):
        with pytest.raises(InvalidOffer, match=message.replace("(", r"\(").replace(")", r"\)")):
            patched_offer(stored, patch, "o1")


def test_a_refused_experiment_names_the_variant_and_the_field():
    body = {"variants": [{"name": "a"}, {"name": "b", "boosts": {"GB 1": 1}}]}
    with pytest.raises(InvalidExperiment, match=r"^variants\[1\]\.boosts: "):
        validate_experiment(body, "e1")
    with pytest.raises(InvalidExperiment, match=r"^variants\[0\]\.name: 1-64 characters"):
        validate_experiment({"variants": [{"name": "a" * 65}, {"name": "b"}]}, "e1")
    # Empty regions and boosts, however a JSON encoder writes them, mean none, as they always have.
    checked = validate_experiment({"variants": [{"name": "a", "boosts": []}, {"name": "b"}], "regions": []}, "e1")
    assert checked["regions"] == [] and checked["variants"][0]["boosts"] == {}


def test_a_refused_event_row_is_named_by_its_index_in_the_batch_across_frames():
    frames = encode_frame([event_row(n) for n in range(3)]) + encode_frame([event_row(3), event_row(4, kind="view")])
    with pytest.raises(InvalidEvents, match=r"^events\[4\]\.kind: one of impression, click"):
        decode_batch(encode_frames_batch("b1", ["GB"], frames))
    with pytest.raises(InvalidEvents, match=r"^events\[1\]\.ts: epoch seconds"):
        decode_batch(
            encode_batch(
                "b1",
                ["GB"],
                [dict(zip(EVENT_FIELDS, event_row(0))), dict(zip(EVENT_FIELDS, event_row(1, ts=float("nan"))))],
            )
        )
    with pytest.raises(InvalidEvents, match=r"^events\[2\]: expected a map with exactly the fields"):
        decode_batch(encode_frames_batch("b1", ["GB"], encode_frame([event_row(0), event_row(1), event_row(2)[:-1]])))


def test_edge_and_origin_take_the_same_ids_an_event_the_edge_accepts_the_origin_accepts():
    longest = "x" * MAX_ID_CHARS
    body = {
        "events": [
            {
                "type": "purchase",
                "request_id": longest,
                "offer_ids": [longest],
                "value": 5,
                "currency": "GBP",
                "experiment": longest,
                "variant": "v" * 64,
            }
        ]
    }
    [event] = decode_feedback(json.dumps(body).encode())
    row = event_row(
        0,
        id="e1",
        kind=event.type,
        request_id=event.request_id,
        offer_ids=event.offer_ids,
        value=event.value,
        currency=event.currency,
        experiment=event.experiment,
        variant=event.variant,
    )
    _, _, [stored] = decode_batch(encode_frames_batch("b1", ["GB"], encode_frame([row])))
    assert stored["request_id"] == longest and stored["experiment"] == longest and stored["value"] == 5.0
    for field, value in (("request_id", longest + "x"), ("offer_ids", ["a b"]), ("experiment", longest + "x")):
        too_long = {"events": [{**body["events"][0], field: value}]}
        with pytest.raises(InvalidEvents, match=rf"^events\[0\]\.{field}: "):
            decode_feedback(json.dumps(too_long).encode())


@pytest.mark.parametrize(
    "event, message",
    [
        ({"type": "purchase"}, r"events\[0\]\.value: a purchase needs its value"),
        ({"type": "click", "value": 1}, r"events\[0\]\.value: only a purchase has a value"),
        ({"type": "click", "ip": "1.2.3.4"}, r"events\[0\]: unknown field\(s\): ip"),
        ({"type": "view"}, r"events\[0\]\.type: one of click, add_to_cart, purchase"),
    ],
)
def test_a_refused_feedback_event_names_the_field(event, message):
    body = {"events": [{"request_id": "r1", "offer_ids": ["GB-1"], **event}]}
    with pytest.raises(InvalidEvents, match=f"^{message}"):
        decode_feedback(json.dumps(body).encode())

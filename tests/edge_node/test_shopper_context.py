"""What a stored profile becomes for the model and the rules (edge_node.shoppers, serving.shopper_context): the
purchases fold exactly as training folds them, the last day's add_to_cart is the cart, clicks are not purchases,
and recent_items, the profile and the cart take precedence as documented (docs/profiles.md)."""

from __future__ import annotations

import math

from edge_node.serving import PROFILE_HIT, PROFILE_MISS, PROFILE_REQUEST, shopper_context
from edge_node.shoppers import history_profile, recent_events
from models.profile import build
from tests.edge_node.shopper_support import DAY, NOW, profile_of, request


def test_purchases_in_the_window_fold_exactly_as_the_models_profile_of_them():
    purchases = [(f"S{i % 7}", NOW - (30 - i) * DAY) for i in range(30)]
    mine = history_profile(profile_of(*(("purchase", sku, ts) for sku, ts in purchases))).items
    reference = build(purchases).items
    assert mine.keys() == reference.keys()
    for sku, expected in reference.items():
        got = mine[sku]
        assert (got.count, got.first_seen, got.last_seen) == (expected.count, expected.first_seen, expected.last_seen)
        assert math.isclose(got.decayed, expected.decayed, rel_tol=1e-12)


def test_clicks_are_not_purchases_and_only_the_last_days_add_to_cart_is_the_cart():
    record = profile_of(
        ("purchase", "A", NOW - 10 * DAY),
        ("click", "B", NOW - 60),
        ("add_to_cart", "C", NOW - 3 * DAY),
        ("add_to_cart", "D", NOW - 3600),
    )
    items, ages = recent_events(record, NOW)
    assert items == ("A", "D") and ages == (10.0, 1 / 24)
    context = shopper_context(request(), record)
    assert context.profile == PROFILE_HIT and set(context.history.items) == {"A", "D"}


def test_recent_items_take_precedence_and_the_cart_is_added_as_bought_now():
    record = profile_of(("purchase", "A", NOW - DAY / 2))
    sent = shopper_context(request(recent_items=("X", "Y"), cart=("Z",)), record)
    assert sent.profile == PROFILE_REQUEST and sent.history is None
    assert sent.items == ("X", "Y", "Z") and sent.ages_days[2] == 0.0 and math.isnan(sent.ages_days[0])
    stored = shopper_context(request(cart=("z",)), record)
    assert stored.items == ("A", "Z") and stored.ages_days == (0.5, 0.0)  # a SKU not offered here, upper-cased
    assert stored.history.items["Z"].count == 1
    nothing = shopper_context(request(cart=("Z",)), None)
    assert nothing.profile == PROFILE_MISS and nothing.items == ("Z",) and nothing.history is None

"""What the tests of a shopper's stored profile share: a codec record made of events, and a request of a shopper."""

from __future__ import annotations

from edge_node.profiles import ProfileCodec, ProfileEvent
from edge_node.validation import RecommendationRequest

NOW = 1.7e9
DAY = 86400.0
codec = ProfileCodec()


def profile_of(*events: tuple[str, str, float]):
    """The stored record of these (kind, item, timestamp) events, applied in order to an empty one."""
    record = codec.empty()
    for kind, item, ts in events:
        record = codec.apply(record, ProfileEvent(kind, (item,), ts))
    return record


def request(**fields) -> RecommendationRequest:
    """A request of shopper "s" in GB at NOW, with `fields` changed."""
    base = dict(shopper_id="s", region="GB", recent_items=(), recent_ages_days=None, k=10, exclude=(), at=NOW)
    return RecommendationRequest(**{**base, "device": None, **fields})

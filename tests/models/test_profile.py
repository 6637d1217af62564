from __future__ import annotations

import json
import math
import random

import pytest

from models.profile import DAY_SECONDS, DECAY_DAYS, MAX_ITEMS, RECENT_EVENTS, Profile, build, from_dict, to_dict, update

T0 = 1_300_000_000.0


def shopper_events(seed: int, count: int, items: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    return [(f"{rng.randrange(items):05d}", T0 + rng.uniform(0, 300) * DAY_SECONDS) for _ in range(count)]


def test_updating_event_by_event_equals_building_from_all_events() -> None:
    events = sorted(shopper_events(1, 2_000, 600), key=lambda event: event[1])
    profile = Profile()
    for sku, time in events:
        update(profile, sku, time)
    assert to_dict(profile) == to_dict(build(events))
    assert len(profile.items) == MAX_ITEMS and profile.events == 2_000
    assert len(profile.recent) == RECENT_EVENTS and profile.recent[-1] == events[-1]


def test_an_item_summary_holds_count_first_last_decayed_frequency_and_mean_gap() -> None:
    days = [0.0, 10.0, 40.0]
    profile = build([("10002", T0 + d * DAY_SECONDS) for d in days] + [("20003", T0 + 5 * DAY_SECONDS)])
    summary = profile.items["10002"]
    assert (summary.count, summary.first_seen, summary.last_seen) == (3, T0, T0 + 40 * DAY_SECONDS)
    assert summary.decayed == pytest.approx(sum(math.exp(-(40 - d) / DECAY_DAYS) for d in days))
    assert summary.decayed_at(T0 + 100 * DAY_SECONDS) == pytest.approx(summary.decayed * math.exp(-60 / DECAY_DAYS))
    assert summary.mean_gap_days() == pytest.approx(20.0) and profile.items["20003"].mean_gap_days() == 0.0
    assert profile.last_event == T0 + 40 * DAY_SECONDS


def test_without_eviction_the_order_of_events_does_not_matter() -> None:
    events = shopper_events(2, 300, 80)
    shuffled = events[:]
    random.Random(0).shuffle(shuffled)
    profile = Profile()
    for sku, time in shuffled:  # late, out-of-order events: a store may receive them so
        update(profile, sku, time)
    expected = build(events)
    assert profile.items.keys() == expected.items.keys() and profile.recent == expected.recent
    for sku, summary in expected.items.items():
        got = profile.items[sku]
        assert (got.count, got.first_seen, got.last_seen) == (summary.count, summary.first_seen, summary.last_seen)
        assert got.decayed == pytest.approx(summary.decayed, rel=1e-9)


def test_past_the_bound_the_item_of_lowest_decayed_frequency_is_dropped() -> None:
    events = [(f"{i:05d}", T0 + i * DAY_SECONDS) for i in range(MAX_ITEMS)]
    events += [("00000", T0 + MAX_ITEMS * DAY_SECONDS)]  # the oldest item, bought again: now strong
    profile = build(events + [("99999", T0 + (MAX_ITEMS + 1) * DAY_SECONDS)])
    assert len(profile.items) == MAX_ITEMS
    assert "00001" not in profile.items and {"00000", "00002", "99999"} <= profile.items.keys()


def test_a_profile_survives_json_and_a_malformed_one_is_refused() -> None:
    profile = build(shopper_events(3, 400, 300))
    assert to_dict(from_dict(json.loads(json.dumps(to_dict(profile))))) == to_dict(profile)
    broken = to_dict(profile)
    next(iter(broken["items"].values()))[0] = 0  # a count of zero
    with pytest.raises(ValueError):
        from_dict(broken)

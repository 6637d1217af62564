"""`models.features.encode_profile` writes each column once (not slot by slot): the same arrays, bit for bit, as the
slot-by-slot layout it replaced, ties and profiles wider than the row included."""

from __future__ import annotations

import random

import numpy as np

from models.features import encode_profile
from models.profile import DAY_SECONDS, ItemSummary, Profile


def slot_by_slot(profile: Profile, now: float, item_index: dict[str, int], width: int) -> tuple[np.ndarray, ...]:
    summaries = sorted(profile.items.items(), key=lambda entry: entry[1].decayed_at(now))[-width:] if width else []
    arrays = (np.zeros(width, np.int64),) + tuple(np.zeros(width, np.float32) for _ in range(4))
    start = width - len(summaries)
    for offset, (sku, summary) in enumerate(summaries):
        slot = start + offset
        arrays[0][slot] = item_index.get(sku, 0)
        arrays[1][slot] = summary.count
        arrays[2][slot] = max(now - summary.last_seen, 0.0) / DAY_SECONDS
        arrays[3][slot] = max(now - summary.first_seen, 0.0) / DAY_SECONDS
        arrays[4][slot] = summary.decayed_at(now)
    return arrays


def test_encode_profile_gives_the_slot_by_slot_arrays_bit_for_bit() -> None:
    rng = random.Random(3)
    now = 1_323_000_000.0
    item_index = {f"SKU{n}": n + 1 for n in range(300)}  # SKU300 and above are unknown: item 0
    for width in (0, 1, 8, 64):
        for _ in range(40):
            items = {}
            for n in rng.sample(range(400), rng.randint(0, 120)):
                first = now - rng.uniform(0, 400) * DAY_SECONDS
                last = first + rng.uniform(0, 30) * DAY_SECONDS
                decayed = rng.choice([1.0, 2.0, rng.uniform(0.1, 9.0)])  # repeated values: ties in the order
                items[f"SKU{n}"] = ItemSummary(rng.randint(1, 9), first, min(last, now), decayed)
            profile = Profile(items=items)
            got, expected = (
                encode_profile(profile, now, item_index, width),
                slot_by_slot(profile, now, item_index, width),
            )
            for a, b in zip(got, expected):
                assert a.dtype == b.dtype and a.shape == b.shape == (width,)
                assert np.array_equal(a, b)

"""Random purchase profiles for the encoders' bit-for-bit tests: ties in the decayed counts, items the index does
not know, and profiles wider than the row."""

from __future__ import annotations

import random
from typing import Iterator

from models.profile import DAY_SECONDS, ItemSummary, Profile

NOW = 1_323_000_000.0
ITEM_INDEX = {f"SKU{n}": n + 1 for n in range(300)}  # SKU300 and above are unknown: item 0


def random_profiles(seed: int, *, last_after_now: bool) -> Iterator[tuple[int, Profile]]:
    """40 profiles for each row width (0, 1, 8, 64), as (width, profile); with `last_after_now` some items were last
    seen after NOW, else last_seen is at most NOW."""
    rng = random.Random(seed)
    for width in (0, 1, 8, 64):
        for _ in range(40):
            items = {}
            for n in rng.sample(range(400), rng.randint(0, 120)):
                first = NOW - rng.uniform(0, 400) * DAY_SECONDS
                last = first + rng.uniform(0, 30) * DAY_SECONDS
                last = last if last_after_now else min(last, NOW)
                decayed = rng.choice([1.0, 2.0, rng.uniform(0.1, 9.0)])  # repeated values: ties in the order
                items[f"SKU{n}"] = ItemSummary(rng.randint(1, 9), first, last, decayed)
            yield width, Profile(items=items)

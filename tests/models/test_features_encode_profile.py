"""`models.features.encode_profile` writes each column once (not slot by slot): the same arrays, bit for bit, as the
slot-by-slot layout it replaced, ties and profiles wider than the row included."""

from __future__ import annotations

import numpy as np

from models.features import encode_profile
from models.profile import DAY_SECONDS, Profile
from tests.models.profile_support import ITEM_INDEX, NOW, random_profiles


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
    for width, profile in random_profiles(3, last_after_now=False):
        got, expected = (
            encode_profile(profile, NOW, ITEM_INDEX, width),
            slot_by_slot(profile, NOW, ITEM_INDEX, width),
        )
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype and a.shape == b.shape == (width,)
            assert np.array_equal(a, b)

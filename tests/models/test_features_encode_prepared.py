"""`encode_prepared` (a profile prepared once, encoded at each request's time) gives `encode_profile`'s arrays bit
for bit: on random profiles with ties and wider than the row, and on the real customers' profiles as the edge
stores them (the codec's record, then edge_node.shoppers.history_profile) through a trained bundle."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from edge_node.profiles import ProfileCodec, ProfileEvent
from edge_node.shoppers import history_profile
from models.data import purchase_events, read_transactions
from models.features import encode_prepared, encode_profile, prepare_profile
from models.profile import DAY_SECONDS, ItemSummary, Profile
from models.runtime import Ranker

REAL_DATA = Path("/work/shared/data/online_retail/transactions.csv.gz")


def assert_same(got: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...]) -> None:
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_encode_prepared_gives_encode_profiles_arrays_bit_for_bit_with_ties() -> None:
    rng = random.Random(19)
    now = 1_323_000_000.0
    item_index = {f"SKU{n}": n + 1 for n in range(300)}  # SKU300 and above are unknown: item 0
    for width in (0, 1, 8, 64):
        for _ in range(40):
            items = {}
            for n in rng.sample(range(400), rng.randint(0, 120)):
                first = now - rng.uniform(0, 400) * DAY_SECONDS
                last = first + rng.uniform(0, 30) * DAY_SECONDS
                decayed = rng.choice([1.0, 2.0, rng.uniform(0.1, 9.0)])  # repeated values: ties in the order
                items[f"SKU{n}"] = ItemSummary(rng.randint(1, 9), first, last, decayed)  # some last after now
            profile = Profile(items=items)
            prepared = prepare_profile(profile, item_index)
            for at in (now, now + 3 * DAY_SECONDS):
                assert_same(encode_prepared(prepared, at, width), encode_profile(profile, at, item_index, width))


@pytest.mark.skipif(not REAL_DATA.is_file(), reason="the Online Retail data is not on this machine")
def test_ranker_encode_prepared_equals_encode_profile_on_real_customers_profiles(bundle_dir: Path) -> None:
    model = Ranker.load(bundle_dir)
    events = purchase_events(read_transactions(REAL_DATA))
    codec = ProfileCodec()
    records: dict[int, object] = {}
    for cid, code, at in zip(
        events.customer_id.tolist()[:60_000],
        events.stock_code.tolist()[:60_000],
        events.invoiced_at.astype("int64").tolist()[:60_000],
    ):
        if 1 <= len(code) <= 64 and 0 <= at < 2**32:
            records[cid] = codec.apply(records.get(cid) or codec.empty(), ProfileEvent("purchase", (code,), at))
    assert len(records) > 100
    for record in records.values():
        history = history_profile(record)  # type: ignore[arg-type]
        latest = max(summary.last_seen for summary in history.items.values())
        for now in (latest, latest + 0.5, latest + 40 * DAY_SECONDS):
            got, expected = (
                model.encode_prepared(model.prepare_profile(history), now),
                model.encode_profile(history, now),
            )
            assert got.width == expected.width
            assert_same(got.rows(0), expected.rows(0))

"""`encode_prepared` (a profile prepared once, encoded at each request's time) gives `encode_profile`'s arrays bit
for bit: on random profiles with ties and wider than the row, and on the real customers' profiles as the edge
stores them (the codec's record, then edge_node.shoppers.history_profile) through a trained bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_node.profiles import ProfileCodec, ProfileEvent
from edge_node.shoppers import history_profile
from models.data import purchase_events, read_transactions
from models.features import encode_prepared, encode_profile, prepare_profile
from models.profile import DAY_SECONDS
from models.runtime import Ranker
from tests.models.profile_support import ITEM_INDEX, NOW, random_profiles

REAL_DATA = Path("/work/shared/data/online_retail/transactions.csv.gz")


def assert_same(got: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...]) -> None:
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_encode_prepared_gives_encode_profiles_arrays_bit_for_bit_with_ties() -> None:
    for width, profile in random_profiles(19, last_after_now=True):
        prepared = prepare_profile(profile, ITEM_INDEX)
        for at in (NOW, NOW + 3 * DAY_SECONDS):
            assert_same(encode_prepared(prepared, at, width), encode_profile(profile, at, ITEM_INDEX, width))


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

"""The health counters in an event batch: absent in older edges' batches, checked when present."""

from __future__ import annotations

import msgpack
import pytest

from origin_sync.wire.events import decode_batch, encode_frame, encode_frames_batch
from origin_sync.wire.health import BUCKETS, batch_health, bucket_of, quantile_ms


def test_a_batch_carries_its_health_rows_beside_its_events_and_older_batches_none() -> None:
    row = ["exp", "candidate", "GB", "m-1", 3, 1, 1, [2] + [0] * (BUCKETS - 1)]
    frames = encode_frame([])
    body = encode_frames_batch("b1", ["GB"], frames, [row])
    assert decode_batch(body)[0] == "b1"
    assert batch_health(body) == [
        {
            "experiment": "exp",
            "variant": "candidate",
            "region": "GB",
            "model_version": "m-1",
            "answers": 3,
            "fallbacks": 1,
            "errors": 1,
            "model_ms": [2] + [0] * (BUCKETS - 1),
        }
    ]
    assert batch_health(encode_frames_batch("b2", ["GB"], frames)) == []


def test_malformed_health_rows_are_refused() -> None:
    outer = {"batch_id": "b", "regions": ["GB"], "encoding": "frames", "events": b"", "health": [["x", None, "GB"]]}
    with pytest.raises(ValueError, match="health"):
        batch_health(msgpack.packb(outer))


def test_model_time_buckets_and_their_quantiles() -> None:
    assert bucket_of(0.3) == 0 and bucket_of(0.5) == 0 and bucket_of(0.7) == 1 and bucket_of(5000) == BUCKETS - 1
    buckets = [0] * BUCKETS
    buckets[bucket_of(3.0)] = 99
    buckets[bucket_of(300.0)] = 1
    assert quantile_ms(buckets, 0.99) == 5.0 and quantile_ms(buckets, 1.0) == 500.0 and quantile_ms([0], 0.5) is None

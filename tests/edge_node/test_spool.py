"""The event spool on its own: rows appended on the request path while the writer runs are written exactly once and
synced, segments travel to the origin as the frames they hold, and a torn or corrupted frame is never shipped."""

from __future__ import annotations

import asyncio
import os
import time

import msgpack
import pytest

from edge_node.spool import CLOSED_SUFFIX, EventSpool, read_segment
from origin_sync.events import (
    EVENT_FIELDS,
    InvalidEvents,
    complete_frames,
    decode_batch,
    encode_frame,
    encode_frames_batch,
)


def impression_row(number: int, region: str = "GB") -> list:
    row = dict.fromkeys(EVENT_FIELDS)
    row.update(id=f"r{number}", kind="impression", ts=time.time(), region=region, request_id=f"r{number}",
               offer_ids=[f"{region}-{number % 7}", f"{region}-{number % 11}"], model_version="m-1",
               data_version=number)
    return [row[field] for field in EVENT_FIELDS]


def test_rows_appended_while_the_writer_runs_are_written_exactly_once(tmp_path):
    spool = EventSpool(tmp_path, flush_interval_s=0.001, flush_events=64, segment_max_age_s=0.02)
    spool.open()

    async def produce() -> None:
        writer = asyncio.create_task(spool.run_writer())
        for number in range(20_000):
            assert spool.append(impression_row(number))
            if number % 500 == 0:
                await asyncio.sleep(0)  # let the loop breathe, as a server between requests
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer

    asyncio.run(produce())
    assert spool.appended == spool.written == 20_000
    segments = sorted(spool.directory.glob(f"*{CLOSED_SUFFIX}"))
    assert len(segments) > 1  # segments rolled by age while the rows came in
    assert not list(spool.directory.glob("*.open"))  # a clean stop closes the segment it was writing
    ids = [event["id"] for path in segments for event in read_segment(path)[0]]
    assert ids == [f"r{n}" for n in range(20_000)]  # every row once, in order
    assert spool.bytes_on_disk == sum(p.stat().st_size for p in segments)


def test_a_segment_ships_as_its_frames_and_decodes_at_the_origin_to_checked_events(tmp_path):
    frames = encode_frame([impression_row(1), impression_row(2)]) + encode_frame([impression_row(3)])
    whole, count, torn = complete_frames(frames)
    assert (whole, count, torn) == (len(frames), 2, False)
    batch_id, regions, events = decode_batch(encode_frames_batch("b-1", ["GB"], frames))
    assert (batch_id, regions) == ("b-1", ["GB"])
    assert [e["id"] for e in events] == ["r1", "r2", "r3"]
    assert set(events[0]) == set(EVENT_FIELDS) and events[0]["offer_ids"] == ["GB-1", "GB-1"]


def test_a_torn_tail_is_left_out_of_the_shipment_and_a_corrupted_frame_is_refused():
    good = encode_frame([impression_row(1)])
    torn = good + encode_frame([impression_row(2)])[:-3]  # the last write cut short by a crash
    assert complete_frames(torn) == (len(good), 1, True)
    corrupted = bytearray(good + encode_frame([impression_row(2)]))
    corrupted[-1] ^= 0xFF
    with pytest.raises(InvalidEvents, match="torn or corrupted frame"):
        decode_batch(encode_frames_batch("b-2", ["GB"], bytes(corrupted)))


def test_the_origin_checks_events_in_frames_like_any_other(tmp_path):
    other_region = encode_frame([impression_row(1, region="DE")])
    with pytest.raises(InvalidEvents, match="not a region of this batch"):
        decode_batch(encode_frames_batch("b-3", ["GB"], other_region))
    short_row = encode_frame([impression_row(1)[:-1]])
    with pytest.raises(InvalidEvents, match="exactly the fields"):
        decode_batch(encode_frames_batch("b-4", ["GB"], short_row))
    # Frames written by an edge of the previous release (events as maps) still decode.
    as_map = dict(zip(EVENT_FIELDS, impression_row(5)))
    _, _, events = decode_batch(encode_frames_batch("b-5", ["GB"], encode_frame([as_map])))
    assert events == [as_map]
    assert msgpack.unpackb(encode_frames_batch("b-6", ["GB"], b""))["events"] == b""


def test_a_full_spool_drops_new_rows_and_counts_them(tmp_path):
    spool = EventSpool(tmp_path, max_pending=10)
    spool.open()
    accepted = [spool.append(impression_row(n)) for n in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    assert spool.dropped["backlog"] == 5
    spool.flush()
    assert spool.written == 10 and spool.has_room()
    spool.bytes_on_disk = spool.max_bytes
    assert not spool.append(impression_row(99)) and spool.dropped["spool_full"] == 1


def test_a_segment_is_synced_and_closed_for_the_shipper_by_the_sync_thread(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real_fdatasync(fd)))
    spool = EventSpool(tmp_path, flush_interval_s=0.002, sync_interval_s=0.01, segment_max_age_s=10)
    spool.open()

    async def scenario() -> None:
        writer = asyncio.create_task(spool.run_writer())
        for number in range(50):
            spool.append(impression_row(number))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)
        assert synced  # written rows are fdatasync'ed within the sync interval, segment still open
        assert list(spool.directory.glob("*.open")) and not spool.closed_segments()
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer

    asyncio.run(scenario())
    [segment] = spool.closed_segments()
    assert [e["id"] for e in read_segment(segment)[0]] == [f"r{n}" for n in range(50)]
    assert not list(spool.directory.glob("*.open"))

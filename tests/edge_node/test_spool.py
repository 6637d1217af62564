"""The event spool on its own: rows appended on the request path while the writer runs are written exactly once and
synced, segments travel to the origin as the frames they hold, a torn or corrupted frame is never shipped, and an
acknowledged append is settled only once its batch is written (or fdatasync'ed), failed when that write fails."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import threading
import time

import msgpack
import pytest

from edge_node.spool import CLOSED_SUFFIX, EventSpool, NotKept, read_segment
from origin_sync.wire.events import (
    EVENT_FIELDS,
    InvalidEvents,
    complete_frames,
    decode_batch,
    encode_frame,
    encode_frames_batch,
)
from tests.events_support import event_row


def impression_row(number: int, region: str = "GB") -> list:
    return event_row(number, region=region, offer_ids=[f"{region}-{number % 7}", f"{region}-{number % 11}"])


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


# -- acknowledged appends (POST /v1/events): a waiter is settled by the write, or the fdatasync, of its batch --------


def click_row(number: int) -> list:
    return event_row(
        number, id=f"c{number}", kind="click", offer_ids=[f"GB-{number % 7}"], model_version=None, data_version=None
    )


def open_segment_events(spool: EventSpool) -> tuple[list[str], int]:
    """(event ids, whole frames) of the open segment, read from the file (what the kernel holds, not memory)."""
    [segment] = spool.directory.glob("*.open")
    data = segment.read_bytes()
    whole, frames, _ = complete_frames(data)
    return [e["id"] for e in read_segment(segment)[0]], frames


async def start_writer(spool: EventSpool) -> asyncio.Task:
    writer = asyncio.create_task(spool.run_writer())
    await asyncio.sleep(0)  # the writer runs: acknowledged appends need its loop
    return writer


async def stop_writer(writer: asyncio.Task) -> None:
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer


def test_an_acked_append_resolves_only_once_its_batch_is_in_the_segment_file_one_write_per_pass(tmp_path):
    # A flush interval no test waits for: only the wake-up of the first waiting append can write these rows.
    spool = EventSpool(tmp_path, flush_interval_s=30, segment_max_age_s=60)
    spool.open()

    async def scenario() -> None:
        writer = await start_writer(spool)
        started = time.monotonic()
        waiting = [spool.append_acked([click_row(n), click_row(100 + n)]) for n in range(10)]  # one loop pass
        assert not any(w.done() for w in waiting)
        assert not list(spool.directory.glob("*.open"))  # nothing written yet: no answer may leave
        seen_when_resolved: list[tuple[list[str], int]] = []
        waiting[0].add_done_callback(lambda _: seen_when_resolved.append(open_segment_events(spool)))
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert time.monotonic() - started < 1  # one loop pass, not the flush interval
        [(ids, frames)] = seen_when_resolved
        assert sorted(ids) == sorted([f"c{n}" for n in range(10)] + [f"c{100 + n}" for n in range(10)])
        assert frames == 1  # the ten requests of the pass shared one write(2)
        assert spool.append_acked([click_row(50)]) is not None  # the next pass: its own write
        await asyncio.sleep(0.01)
        assert open_segment_events(spool)[1] == 2
        await stop_writer(writer)

    asyncio.run(scenario())
    [segment] = spool.closed_segments()
    assert len(read_segment(segment)[0]) == 21 and spool.appended == spool.written == 21


def test_with_ack_fsync_an_append_resolves_only_after_the_fdatasync_of_its_write(tmp_path, monkeypatch):
    # The real fdatasync, held at a gate: while it has not returned, no waiter may be resolved.
    gate, syncing = threading.Event(), threading.Event()
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def gated_fdatasync(fd: int) -> None:
        syncing.set()
        gate.wait(10)
        real_fdatasync(fd)
        synced.append(fd)

    monkeypatch.setattr(os, "fdatasync", gated_fdatasync)
    spool = EventSpool(tmp_path, ack="fsync", flush_interval_s=30, sync_interval_s=30, segment_max_age_s=60)
    spool.open()

    async def scenario() -> None:
        writer = await start_writer(spool)
        first = spool.append_acked([click_row(1)])
        syncs_done_when_resolved: list[int] = []
        first.add_done_callback(lambda _: syncs_done_when_resolved.append(len(synced)))
        await asyncio.sleep(0.05)
        assert syncing.is_set() and open_segment_events(spool)[0] == ["c1"]  # written, being synced
        assert not first.done()
        # Two more passes while that fdatasync runs: each is written, both wait for the next sync.
        second = spool.append_acked([click_row(2)])
        await asyncio.sleep(0.01)
        third = spool.append_acked([click_row(3)])
        await asyncio.sleep(0.01)
        assert open_segment_events(spool) == (["c1", "c2", "c3"], 3)
        assert not any(w.done() for w in (first, second, third))
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second, third), 5)
        assert syncs_done_when_resolved[0] >= 1  # resolved after its fdatasync had returned
        assert len(synced) == 2  # the two writes made during the first sync shared one fdatasync
        await stop_writer(writer)

    asyncio.run(scenario())
    [segment] = spool.closed_segments()
    assert [e["id"] for e in read_segment(segment)[0]] == ["c1", "c2", "c3"]


def test_a_failed_write_fails_its_waiters_and_the_next_batch_goes_to_a_new_segment(tmp_path):
    # A real failure of write(2): the file size limit (RLIMIT_FSIZE, like a full disk) lets the kernel write part of
    # the frame, then refuses the rest with EFBIG. SIGXFSZ is ignored meanwhile, so the write fails instead.
    spool = EventSpool(tmp_path, flush_interval_s=30, segment_max_age_s=60)
    spool.open()

    async def scenario() -> None:
        writer = await start_writer(spool)
        await asyncio.wait_for(spool.append_acked([click_row(1)]), 5)
        [first_segment] = spool.directory.glob("*.open")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (first_segment.stat().st_size + 10, hard))
        try:
            failing = [spool.append_acked([click_row(n)]) for n in range(2, 5)]
            results = await asyncio.wait_for(asyncio.gather(*failing, return_exceptions=True), 5)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        assert all(isinstance(r, NotKept) and r.code == "spool_write_failed" for r in results), results
        assert "File too large" in str(results[0])
        assert spool.dropped["disk_error"] == 3
        await asyncio.wait_for(spool.append_acked([click_row(5)]), 5)  # kept, in a new segment
        await stop_writer(writer)
        return first_segment

    first_segment = asyncio.run(scenario())
    torn, fresh = spool.closed_segments()
    assert torn.stem == first_segment.stem
    assert read_segment(torn) == (read_segment(torn)[0], True)  # ends in the part of a frame that was written
    assert [e["id"] for e in read_segment(torn)[0]] == ["c1"]  # what the shipper sends: the failed rows are not in it
    assert [e["id"] for e in read_segment(fresh)[0]] == ["c5"]


@pytest.mark.parametrize("ack", ["write", "fsync"])
def test_a_stop_writes_and_settles_every_waiting_append_and_refuses_later_ones(tmp_path, ack):
    spool = EventSpool(tmp_path, ack=ack, flush_interval_s=30, segment_max_age_s=60, max_pending=10)
    spool.open()

    async def scenario() -> None:
        writer = await start_writer(spool)
        assert spool.append_acked([click_row(n) for n in range(11)]) is None  # all or none: no room for 11
        assert spool.dropped["backlog"] == 11 and spool.appended == 0
        writer.cancel()  # the stop runs before the flush these appends schedule
        waiting = [spool.append_acked([click_row(n)]) for n in range(5)]
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert all(w.done() and w.exception() is None for w in waiting)  # written (and synced) by the stop
        with pytest.raises(NotKept) as refused:
            spool.append_acked([click_row(9)])
        assert refused.value.code == "spool_stopping"

    asyncio.run(scenario())
    [segment] = spool.closed_segments()
    assert [e["id"] for e in read_segment(segment)[0]] == [f"c{n}" for n in range(5)]

"""The NATS JetStream event sink: one stream per event kind, deduplicated by message id.

The stream drops a message whose `Nats-Msg-Id` it stored within its duplicate window (2 h here; the server holds
every id of that window in memory). Both copies of one event must reach it within the window:
a batch's retry (seconds to minutes of backoff), and a client's retry of an event (same event_id, so the same id)
kept by two edges, of which the slower is a replica killed and restarted, which ships its spool once it is back. A
copy held longer than 2 h (a replica down for hours with the event in its spool) is stored again here; the SQL sink
has no window."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from origin_sync.origin.sinks.base import EventSink
from origin_sync.wire.events import KINDS

log = logging.getLogger("edgerec.origin.events")


class NatsEventSink(EventSink):
    """NATS JetStream: one stream per event kind (`<stream_prefix>_<KIND>`, subject `<subject_prefix>.<kind>`),
    each event a JSON message with `Nats-Msg-Id` = its id, deduplicated by the stream within `duplicate_window_s`."""

    name = "nats"

    def __init__(
        self,
        url: str,
        subject_prefix: str = "edgerec.events",
        stream_prefix: str = "EDGEREC_EVENTS",
        duplicate_window_s: float = 2 * 3600,
    ) -> None:
        self.url, self.subject_prefix, self.stream_prefix = url, subject_prefix, stream_prefix
        self.duplicate_window_s = duplicate_window_s
        self._nc: Any = None
        self._js: Any = None

    def stream(self, kind: str) -> str:
        return f"{self.stream_prefix}_{kind.upper()}"

    def subject(self, kind: str) -> str:
        return f"{self.subject_prefix}.{kind}"

    async def open(self) -> None:
        import nats
        from nats.js.api import StreamConfig

        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, connect_timeout=5)
        self._js = self._nc.jetstream()
        for kind in KINDS:
            config = StreamConfig(
                name=self.stream(kind), subjects=[self.subject(kind)], duplicate_window=self.duplicate_window_s
            )
            try:
                await self._js.add_stream(config)
            except Exception:  # noqa: BLE001 - it exists (maybe with other settings): keep it as it is
                info = await self._js.stream_info(self.stream(kind))
                window = info.config.duplicate_window or 0
                if window < self.duplicate_window_s:
                    log.warning(
                        "NATS stream %s deduplicates over %.0f s only (this origin expects %.0f s): events retried "
                        "later than that are stored twice in it",
                        self.stream(kind),
                        window,
                        self.duplicate_window_s,
                    )

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()

    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        # Publish in windows of concurrent acknowledged publishes; a failure fails the batch, which the edge
        # retries, and the stream drops the messages it already has (same Nats-Msg-Id).
        window = 512
        for start in range(0, len(events), window):
            await asyncio.gather(
                *(
                    self._js.publish(self.subject(e["kind"]), orjson.dumps(e), headers={"Nats-Msg-Id": e["id"]})
                    for e in events[start : start + window]
                )
            )
        return True

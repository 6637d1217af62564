"""`python -m benchmarks.edge_no_events edge serve ...`: the edge with impressions switched off, for the latency
benchmark's events on/off comparison only (target `edgerec_no_events`).

The edge has no switch for this: `edge_node.app.build_app` always builds an `EventRecorder` and the request path
records an impression for every answer. This launcher replaces `EventRecorder.impression` with a no-op before the
edge's own CLI starts, so the pseudonym hash, the event dict and the spool append (and the writer's fsyncs and the
shipper's uploads they cause) are gone from the request path and nothing else changes. It is applied at import
time, so `--workers N` (spawned processes re-import this module as their main module) get it too. Once the edge
has a real switch (e.g. `--events off` / `EDGEREC_EVENTS=off` passing `recorder=None` to the recommender), the
benchmark should use it instead of this launcher.
"""

from __future__ import annotations

import sys
from typing import Any

from edge_node import events


def _no_impression(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


events.EventRecorder.impression = _no_impression  # type: ignore[method-assign]

if __name__ == "__main__":
    from edgerec.cli import main

    sys.exit(main())

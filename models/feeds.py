"""A batch of requests as the ranking graph's inputs: the shoppers' slots (ragged, or rows padded to the widest) and
the candidates and penalties as [B, N] rows."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from models.bundle import SLOT_INPUTS
from models.encoding import RecentEvents, RequestContext, batch_event_slots

# (context, region, candidates, penalty); RecentEvents only for ragged graphs
Request = tuple[RequestContext | RecentEvents, int, np.ndarray, np.ndarray]


def context_width(contexts: Sequence[RequestContext], length: int, trims: bool) -> int:
    """How many of the last context columns a padded batch sends: the widest context's events (at least one column)
    for graphs that take a narrower context, else all L. The columns left out hold only padding (item 0), which
    adds nothing to any score."""
    if not trims:
        return length
    return max(1, max(length if c.width is None else min(c.width, length) for c in contexts))


def padded_rows(
    contexts: Sequence[RequestContext], names: Sequence[str], length: int, trims: bool
) -> dict[str, np.ndarray]:
    """Each context's last `context_width` columns as row b of a [B, W] input per name."""
    first = length - context_width(contexts, length, trims)
    per_request = [context.rows(first) for context in contexts]
    # One concatenate and a reshape per input: the same arrays as np.stack's, a third of its cost (its Python
    # per-array checks were 3 of the step's 6.7 µs a request outside onnxruntime at batches of 12).
    batch = len(contexts)
    return {name: np.concatenate(column).reshape(batch, -1) for name, column in zip(names, zip(*per_request))}


def ragged_slots(
    contexts: Sequence[RequestContext | RecentEvents], default_ages: np.ndarray, width: int, vocabulary: int
) -> dict[str, np.ndarray]:
    """The filled slots of every context, one context after another, and slot_rows: each slot's context (row). A
    context of unknown width sends all its slots; its padding adds nothing to any score. RecentEvents are
    summarised here, all of the batch's at once, each to its strongest `width` items (batch_event_slots; item
    indices below `vocabulary`)."""
    events = [c for c in contexts if isinstance(c, RecentEvents)]
    if len(events) == len(contexts):  # a batch of requests that sent their events: the edge's usual one
        return batch_event_slots(events, default_ages, width, vocabulary)
    rows = [row for row, c in enumerate(contexts) if isinstance(c, RequestContext)]
    encoded = [c for c in contexts if isinstance(c, RequestContext)]
    widths = [len(c.items) if c.width is None else min(c.width, len(c.items)) for c in encoded]
    per_request = [context.rows(len(context.items) - width) for context, width in zip(encoded, widths)]
    feeds = {name: np.concatenate(column) for name, column in zip(SLOT_INPUTS, zip(*per_request))}
    feeds["slot_rows"] = np.repeat(np.asarray(rows, dtype=np.int64), widths)
    if not events:
        return feeds
    summarised = batch_event_slots(events, default_ages, width, vocabulary)
    event_rows = np.asarray([row for row, c in enumerate(contexts) if isinstance(c, RecentEvents)], dtype=np.int64)
    summarised["slot_rows"] = event_rows[summarised["slot_rows"]]
    # Each row's slots keep their order; rows interleave, which the graph's per-row sums and maxima do not see.
    return {name: np.concatenate((feeds[name], summarised[name])) for name in feeds}


def request_rows(requests: Sequence[Request], width: int) -> dict[str, np.ndarray]:
    """region [B], and candidates and penalty [B, width]: shorter rows padded with item 0 at penalty -inf."""
    batch = len(requests)
    regions = np.fromiter((region for _, region, _, _ in requests), dtype=np.int64, count=batch)
    if all(len(c) == width for _, _, c, _ in requests):
        candidates = np.concatenate([c for _, _, c, _ in requests]).reshape(batch, width)
        penalties = np.concatenate([p for _, _, _, p in requests]).reshape(batch, width)
    else:
        candidates = np.zeros((batch, width), dtype=np.int64)
        penalties = np.full((batch, width), -np.inf, dtype=np.float32)
        for row, (_, _, c, p) in enumerate(requests):
            candidates[row, : len(c)] = c
            penalties[row, : len(p)] = p
    return {"region": regions, "candidates": candidates, "penalty": penalties}

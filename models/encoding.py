"""A request's context as one row of the ranking graph: the RequestContext type, and the summary of a list of
purchase events (recent items with ages) per item, as a profile of those events (models/profile.py) holds it: per
request (few_events_context, many_events_context), or for a whole batch at once (RecentEvents, batch_event_slots)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np

from models.bundle import SLOT_INPUTS
from models.profile import DECAY_DAYS

_SLOT_NAMES = (*SLOT_INPUTS, "slot_rows")


class CaseInsensitiveSkus(dict):
    """A StockCode lookup that tries the code as given, then upper-cased (profiles keep what the events said)."""

    def get(self, sku, default=0):  # type: ignore[override]
        return super().get(sku) or super().get(sku.upper(), default)


@dataclass(frozen=True)
class RequestContext:
    """A shopper's encoded context: one row of the graph's inputs, each [L].

    For a profile graph (bundles since 2026-12-04) the row is the profile's slots: items, counts, ages_days (days
    since each item's last purchase), days_since_first and decayed (frequency at the request), filled slots last.
    For a context graph (before) it is the last L events: items and ages_days, most recent last.
    """

    items: np.ndarray  # int64 [L]: left-padded with 0
    ages_days: np.ndarray  # float32 [L]
    width: int | None = None  # how many of the last positions are filled (the others are padding); None: unknown
    counts: np.ndarray | None = None  # float32 [L], profile graphs only
    days_since_first: np.ndarray | None = None  # float32 [L], profile graphs only
    decayed: np.ndarray | None = None  # float32 [L], profile graphs only

    def rows(self, first: int) -> tuple[np.ndarray, ...]:
        """Its arrays from position `first` on, in the graph's input order."""
        if self.counts is None or self.days_since_first is None or self.decayed is None:
            return self.items[first:], self.ages_days[first:]
        return (
            self.items[first:],
            self.counts[first:],
            self.ages_days[first:],
            self.days_since_first[first:],
            self.decayed[first:],
        )


def many_events_context(items: np.ndarray, ages: np.ndarray, width: int) -> RequestContext:
    """events_context in numpy: for long lists."""
    known = items > 0
    items, ages = items[known], ages[known]
    order = np.argsort(items, kind="stable")  # runs of one item, summed by reduceat: far cheaper than ufunc.at
    items, ages = items[order], ages[order].astype(np.float64)
    slots = np.zeros(width, dtype=np.int64)
    stats = np.zeros((4, width), dtype=np.float32)  # counts, days since last, days since first, decayed
    filled = 0
    if len(items):
        is_start = np.empty(len(items), dtype=bool)
        is_start[0] = True
        np.not_equal(items[1:], items[:-1], out=is_start[1:])
        starts = np.flatnonzero(is_start)
        decayed = np.add.reduceat(np.exp(ages * (-1.0 / DECAY_DAYS)), starts)
        strongest = np.argsort(decayed, kind="stable")[-width:] if width else starts[:0]
        filled = len(strongest)
        slots[width - filled :] = items[starts[strongest]]
        stats[0, width - filled :] = np.diff(starts, append=len(items))[strongest]
        stats[1, width - filled :] = np.minimum.reduceat(ages, starts)[strongest]
        stats[2, width - filled :] = np.maximum.reduceat(ages, starts)[strongest]
        stats[3, width - filled :] = decayed[strongest]
    return RequestContext(slots, stats[1], filled, stats[0], stats[2], stats[3])


def few_events_context(items: list[int], ages: list[float], width: int) -> RequestContext:
    """many_events_context in plain Python, for the short lists most requests carry (a few µs instead of tens)."""
    summaries: dict[int, list[float]] = {}
    for item, age in zip(items, ages):
        if item > 0:
            weight = math.exp(age * (-1.0 / DECAY_DAYS))
            entry = summaries.get(item)
            if entry is None:
                summaries[item] = [item, 1.0, age, age, weight]
            else:
                entry[1] += 1.0
                entry[2] = min(entry[2], age)
                entry[3] = max(entry[3], age)
                entry[4] += weight
    # Same order as the numpy path: by decayed frequency, ties by item index (argsort is stable over sorted items).
    rows = sorted(summaries.values(), key=lambda entry: (entry[4], entry[0]))[-width:] if width else []
    slots = np.zeros(width, dtype=np.int64)
    stats = np.zeros((4, width), dtype=np.float32)
    if rows:
        columns = np.array(rows, dtype=np.float64).T
        slots[width - len(rows) :] = columns[0]
        stats[:, width - len(rows) :] = columns[1:]
    return RequestContext(slots, stats[1], len(rows), stats[0], stats[2], stats[3])


@dataclass(frozen=True, slots=True)
class RecentEvents:
    """A request's events, kept as they are until its batch summarises all of them at once (batch_event_slots): the
    item indices (0: unknown), oldest first, and their float32 ages in days; None: the defaults by position."""

    items: list[int]
    ages_days: np.ndarray | None = None


def batch_event_slots(
    events: Sequence[RecentEvents], default_ages: np.ndarray, width: int, vocabulary: int
) -> dict[str, np.ndarray]:
    """The ragged slots of a batch of event lists, as many_events_context and models.feeds.ragged_slots give them
    request by request (the same values in the same order), in one vectorised pass over all the batch's events:
    the per-request Python of few_events_context was the edge's largest cost outside the server (docs/benchmarks.md).

    `vocabulary`: more than the largest item index. An event's default age is default_ages' entry for its position
    from the newest (positions past it take the oldest). Slots are grouped by request (slot_rows, ascending), each
    request's strongest `width` known items kept, strongest last, ties by item index. About 30 numpy calls a batch
    whatever its size: a batch of one costs more than few_events_context, one of four about the same."""
    lengths = [len(e.items) for e in events]
    total = sum(lengths)
    if not total:
        nothing = np.empty(0, dtype=np.int64)
        return dict(zip(_SLOT_NAMES, (nothing, *(np.empty(0, dtype=np.float32),) * 4, nothing)))
    items = np.fromiter(chain.from_iterable(e.items for e in events), dtype=np.int64, count=total)
    rows = np.repeat(np.arange(len(events)), lengths)
    ends = np.cumsum(lengths)
    position = np.arange(len(default_ages) - total, len(default_ages))  # in default_ages, counted from the newest
    position += (total - ends)[rows]
    ages = default_ages[np.maximum(position, 0, out=position)]
    for event, end, length in zip(events, ends.tolist(), lengths):
        if event.ages_days is not None:
            ages[end - length : end] = event.ages_days
    key = rows * vocabulary + items
    order = np.argsort(key, kind="stable")  # runs of one (request, item), in event order: summed by reduceat
    key, days = key[order], ages[order].astype(np.float64)
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    decayed = np.add.reduceat(np.exp(days * (-1.0 / DECAY_DAYS)), starts)
    run_rows, run_items = np.divmod(key[starts], vocabulary)
    decayed[run_items == 0] = -1.0  # the unknown item: weaker than any known one, and dropped below
    strength = np.lexsort((run_items, decayed, run_rows))  # by request, then weakest first, ties by item
    ranked_rows = run_rows[strength]
    from_strongest = np.cumsum(np.bincount(ranked_rows, minlength=len(events)))[ranked_rows] - np.arange(len(strength))
    keep = (from_strongest <= width) & (run_items[strength] > 0)
    kept = strength[keep]
    columns = (
        run_items[kept],
        (np.append(starts[1:], len(key)) - starts)[kept].astype(np.float32),
        np.minimum.reduceat(days, starts)[kept].astype(np.float32),
        np.maximum.reduceat(days, starts)[kept].astype(np.float32),
        decayed[kept].astype(np.float32),
        ranked_rows[keep],
    )
    return dict(zip(_SLOT_NAMES, columns))

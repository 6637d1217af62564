"""Training samples at time cuts: every shopper's profile at the cut (built with models/profile.py, as an edge builds
it), the items they buy in the horizon after it, and the candidate groups the softmax learns from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data import Transactions
from models.features import FEATURE_NAMES, ProfileSlots, context_features, encode_profile
from models.profile import Profile, update
from models.statistics import ItemStatistics, Vocabulary, fit_item_statistics

_IS_REPEAT = FEATURE_NAMES.index("is_repeat")
_ITEM_KNN = FEATURE_NAMES.index("item_knn")


def unix_seconds(times: np.ndarray) -> np.ndarray:
    """float64 Unix seconds of datetime64 values."""
    return times.astype("datetime64[s]").astype(np.int64).astype(np.float64)


class ProfileTimeline:
    """Every shopper's profile, moved forward through time: `advance(t)` applies the events before t not yet applied."""

    def __init__(self, events: Transactions) -> None:
        order = np.argsort(events.invoiced_at, kind="stable")
        self._customers = events.customer_id[order].tolist()
        self._skus = events.stock_code[order].tolist()
        self._regions = events.region[order].tolist()
        self._seconds = unix_seconds(events.invoiced_at[order])
        self._times = events.invoiced_at[order]
        self._applied = 0
        self.profiles: dict[int, Profile] = {}
        self.regions: dict[int, str] = {}  # each shopper's region: that of their newest event

    def advance(self, until: np.datetime64) -> None:
        end = int(np.searchsorted(self._times, until, side="left"))
        seconds = self._seconds.tolist()
        for position in range(self._applied, end):
            customer = self._customers[position]
            profile = self.profiles.get(customer)
            if profile is None:
                profile = self.profiles[customer] = Profile()
            update(profile, self._skus[position], seconds[position])
            self.regions[customer] = self._regions[position]
        self._applied = max(self._applied, end)


def encode_profiles(profiles: list[Profile], now: float, vocabulary: Vocabulary, width: int) -> ProfileSlots:
    """[S, width] slots of several profiles at one time."""
    lookup = vocabulary.item_index()
    rows = [encode_profile(profile, now, lookup, width) for profile in profiles]
    if not rows:
        return ProfileSlots(np.zeros((0, width), np.int64), *(np.zeros((0, width), np.float32) for _ in range(4)))
    return ProfileSlots(*(np.stack([row[field] for row in rows]) for field in range(5)))


@dataclass(frozen=True)
class HeldOut:
    """Shoppers active on both sides of a cut: their profile at the cut, whole-history counts and targets."""

    slots: ProfileSlots  # [U, P]
    regions: np.ndarray  # int64 [U]
    history: np.ndarray  # float64 [U, V+1]: all purchase events before the cut
    targets: np.ndarray  # bool [U, V+1]: bought in [cut, until), known items only
    customers: tuple[int, ...] = ()  # the shoppers of the rows, in order


def held_out_users(
    timeline: ProfileTimeline,
    events: Transactions,
    vocabulary: Vocabulary,
    cut: np.datetime64,
    until: np.datetime64,
    known: np.ndarray,
    width: int,
) -> HeldOut:
    """Profiles at the cut (the timeline is advanced to it) of the shoppers who buy known items in [cut, until)."""
    timeline.advance(cut)
    items = vocabulary.encode_items(events.stock_code)
    after = (events.invoiced_at >= cut) & (events.invoiced_at < until) & known[items]
    customers = sorted(set(events.customer_id[after].tolist()) & set(timeline.profiles))
    row_of = {customer: row for row, customer in enumerate(customers)}
    size = len(known)
    targets = np.zeros((len(customers), size), dtype=bool)
    rows = np.array([row_of.get(c, -1) for c in events.customer_id[after].tolist()], dtype=np.int64)
    targets[rows[rows >= 0], items[after][rows >= 0]] = True
    before = events.invoiced_at < cut
    rows = np.array([row_of.get(c, -1) for c in events.customer_id[before].tolist()], dtype=np.int64)
    keep = rows >= 0
    history = np.bincount(rows[keep] * size + items[before][keep], minlength=len(customers) * size)
    history = history.reshape(len(customers), size).astype(np.float64)
    history[:, 0] = 0.0
    slots = encode_profiles(
        [timeline.profiles[c] for c in customers], float(unix_seconds(np.array([cut]))[0]), vocabulary, width
    )
    regions = vocabulary.encode_regions(np.array([timeline.regions[c] for c in customers], dtype=object))
    return HeldOut(slots, regions, history, targets, tuple(customers))


def _shown_in(
    shown: Transactions | None,
    vocabulary: Vocabulary,
    users: HeldOut,
    cut: np.datetime64,
    until: np.datetime64,
    known: np.ndarray,
) -> np.ndarray | None:
    """bool [U, V+1]: the known items each user was shown in [cut, until) without taking them; None without any."""
    if shown is None or len(shown) == 0 or not users.customers:
        return None
    window = (shown.invoiced_at >= cut) & (shown.invoiced_at < until)
    row_of = {customer: row for row, customer in enumerate(users.customers)}
    rows = np.array([row_of.get(c, -1) for c in shown.customer_id[window].tolist()], dtype=np.int64)
    items = vocabulary.encode_items(shown.stock_code[window])
    keep = (rows >= 0) & known[items]
    matrix = np.zeros((len(users.customers), len(known)), dtype=bool)
    matrix[rows[keep], items[keep]] = True
    matrix &= ~users.targets
    return matrix if matrix.any() else None


@dataclass(frozen=True)
class CutSamples:
    """One cut's statistics, users, and softmax groups (rows of features, labels, log importance weights)."""

    statistics: ItemStatistics
    users: HeldOut
    known: np.ndarray  # bool [V+1]: items sold before the cut
    features: np.ndarray  # float64 [P, F]
    labels: np.ndarray  # float64 [P]
    log_weights: np.ndarray  # float64 [P]
    group_sizes: np.ndarray  # int64 [G]


def cut_samples(
    vocabulary: Vocabulary,
    purchases: Transactions,
    events: Transactions,
    timeline: ProfileTimeline,
    cut: np.datetime64,
    until: np.datetime64,
    config,
    rng: np.random.Generator,
    shown: Transactions | None = None,
) -> CutSamples:
    """Statistics from before the cut, users across it, and their candidate groups: all repeats, the targets, the
    top item-kNN new items and importance-weighted random items, so the loss ranks repeats against new items.
    `shown` (impressions that got no feedback) adds the items a shopper was shown in the horizon and did not take
    to their group as plain negatives: the softmax learns from what was passed over, not only from random items."""
    statistics = fit_item_statistics(
        vocabulary,
        purchases.select(purchases.invoiced_at < cut),
        events.select(events.invoiced_at < cut),
        neighbours=config.neighbours,
        trend_days=config.trend_days,
        until=cut,
    )
    sold = (
        np.bincount(
            vocabulary.encode_items(purchases.stock_code[purchases.invoiced_at < cut]),
            minlength=len(vocabulary.items) + 1,
        )
        > 0
    )
    known = np.isfinite(statistics.global_log_popularity) & sold
    known[0] = False
    users = held_out_users(timeline, events, vocabulary, cut, until, known, config.slots)
    passed_over = _shown_in(shown, vocabulary, users, cut, until, known)
    rows, labels, log_weights, sizes = [], [], [], []
    for start in range(0, len(users.regions), 128):
        window = slice(start, start + 128)
        part = ProfileSlots(
            *(
                getattr(users.slots, name)[window]
                for name in ("items", "counts", "days_since_last", "days_since_first", "decayed")
            )
        )
        features = context_features(statistics, part, users.regions[window])
        for user in range(features.shape[1]):
            targets = users.targets[start + user]
            repeats = features[_IS_REPEAT, user] > 0
            explore = np.where(repeats | ~known, -np.inf, features[_ITEM_KNN, user])
            wanted = min(config.explore_candidates, len(explore) - 1)
            top = np.argpartition(-explore, wanted)[:wanted]
            top = top[np.isfinite(explore[top])]
            fixed = np.zeros(len(known), dtype=bool)
            fixed[top] = True
            fixed |= repeats | targets
            if passed_over is not None:
                fixed |= passed_over[start + user]
            rest = np.flatnonzero(known & ~fixed)
            drawn = rng.choice(rest, min(config.random_candidates, len(rest)), replace=False)
            candidates = np.r_[np.flatnonzero(fixed), drawn]
            rows.append(features[:, user, candidates].T)
            labels.append(targets[candidates])
            # Sampled softmax: each drawn item stands for len(rest)/len(drawn) items like it.
            log_weights.append(
                np.r_[np.zeros(fixed.sum()), np.full(len(drawn), np.log(len(rest) / max(len(drawn), 1)))]
            )
            sizes.append(len(candidates))
    empty = np.zeros((0, len(FEATURE_NAMES)))
    return CutSamples(
        statistics,
        users,
        known,
        np.concatenate(rows) if rows else empty,
        np.concatenate(labels).astype(np.float64) if labels else np.zeros(0),
        np.concatenate(log_weights) if log_weights else np.zeros(0),
        np.array(sizes, dtype=np.int64),
    )

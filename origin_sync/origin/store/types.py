"""The store's vocabulary: its errors, the log head and a page of deltas, model states and the update callables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

PAGE_LIMIT = 10_000
KeySetUpdate = Callable[[dict[str, Any] | None], dict[str, Any]]
OfferUpdate = Callable[[dict[str, Any]], dict[str, Any]]  # stored offer -> the new, validated offer

# A model's state (the models table's `state`): `published` is stored and served nowhere; `candidate` may be named by
# an experiment's variant (and is then served to that variant's shoppers only); `active` is the one model every edge
# serves; `retired` was active or a candidate and was replaced (an experiment may still name it, a rollback
# re-activates it). Only activation reaches the edges through the change log.
MODEL_PUBLISHED, MODEL_CANDIDATE, MODEL_ACTIVE, MODEL_RETIRED = "published", "candidate", "active", "retired"
MODEL_STATES = (MODEL_PUBLISHED, MODEL_CANDIDATE, MODEL_ACTIVE, MODEL_RETIRED)
PUBLISH_STATES = (MODEL_PUBLISHED, MODEL_CANDIDATE, MODEL_ACTIVE)  # what a publish may ask for


class Compacted(LookupError):
    """The versions asked for were compacted away; the edge must take a snapshot."""

    def __init__(self, since: int, floor: int) -> None:
        super().__init__(f"version {since} is below the compaction floor {floor}; take a snapshot")
        self.floor = floor


class AheadOfOrigin(LookupError):
    """The edge claims a version the origin never reached (e.g. the origin's database was restored)."""


class UnservableModel(ValueError):
    """An experiment names a model that is only `published`: it must become a candidate (or active) first."""


@dataclass(frozen=True)
class LogHead:
    version: int
    hash: bytes
    floor: int = 0


@dataclass(frozen=True)
class DeltaPage:
    """The changes after `since` that concern some regions, and the chain hashes at both ends."""

    since: int
    from_hash: bytes
    to: int
    to_hash: bytes
    head: int
    changes: list[dict[str, Any]]  # {"prev": bytes, "body": canonical change bytes}
    # sha256 of the regions' state vector at `to` (see digest.py); None when `to` is not the head (a full page)
    state_digest: bytes | None = None

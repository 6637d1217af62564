"""The requests of the learning loop's and the profiles' endpoints as msgspec Structs (admin_loop.py,
admin_profiles.py, the sync API's profile pages): what their handlers check and what `/openapi.json` states."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from origin_sync.wire.fields import MAX_FLOAT

from .schemas import Pseudonym, RegionList

MAX_EVENTS_PAGE = 50_000  # events per GET /v1/admin/events
MAX_DECISIONS = 1000
MAX_IMPORT_EVENTS = 20_000  # events per POST /v1/admin/profiles/import


def _text(most: int, what: str) -> Any:
    return Annotated[str, msgspec.Meta(min_length=1, max_length=most, description=what)]


class EventsQuery(msgspec.Struct):
    """A page of the stored events in (ts, id) order; `after_ts` and `after_id` (both, or neither) are the `next`
    of the page before."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_EVENTS_PAGE, description="events in the page")] = 10_000
    after_ts: Annotated[float, msgspec.Meta(ge=0, le=MAX_FLOAT, description="epoch seconds")] | None = None
    after_id: _text(128, "the id of the last event of the page before") | None = None  # type: ignore[valid-type]


class Decision(msgspec.Struct, forbid_unknown_fields=True):
    """One decision of the learning pipeline, with the figures it rests on."""

    pipeline: _text(64, "the pipeline's name")  # type: ignore[valid-type]
    round: _text(128, "the round (its candidate)")  # type: ignore[valid-type]
    step: _text(32, "train, gate, parity, publish, experiment, watch, promote, stop, ...")  # type: ignore[valid-type]
    decision: _text(32, "passed, failed, promoted, stopped, waiting, ...")  # type: ignore[valid-type]
    evidence: dict[str, Any] = {}


class DecisionsQuery(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_DECISIONS, description="newest decisions to answer")] = 100
    pipeline: _text(64, "only this pipeline's") | None = None  # type: ignore[valid-type]


class ProfileImport(msgspec.Struct, forbid_unknown_fields=True):
    """History events folded into the shoppers' summaries, each row [pseudonym, key, kind, item, ts, region] (key
    unique per shopper, so a re-import adds nothing; region "" where the event names no market). The rows are
    then checked one by one, and the first refused one is named."""

    events: Annotated[
        list[tuple[str, str, str, str, int, str]], msgspec.Meta(min_length=1, max_length=MAX_IMPORT_EVENTS)
    ]


class ProfileExport(msgspec.Struct, forbid_unknown_fields=True):
    """Everything the origin holds of one shopper (the caller computes the pseudonym with the deployment's key)."""

    shopper: Pseudonym


class ProfilesPageQuery(msgspec.Struct):
    regions: RegionList
    after: Pseudonym | None = None

"""The admin API of shopper profiles: a batch of history events folded into summaries (`edgerec profiles import`),
and one shopper's stored data (`edgerec profiles export`, the right of access). Keyed by pseudonym: the command
line hashes the shopper id with the deployment's key, so the id never reaches the origin."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from origin_sync.wire.fields import parse_regions
from origin_sync.wire.profiles import check_event, is_pseudonym

from .bodies import read_json
from .errors import ApiError, json_response
from .openapi import documented
from .schemas import checked
from .schemas_loop import MAX_IMPORT_EVENTS, ProfileExport, ProfileImport
from .state import SINK, STORE

log = logging.getLogger("edgerec.origin")

MAX_KEY_CHARS = 128
_ROW_RULE = "[pseudonym, key, kind, item, ts, region]"


def _checked_row(index: int, row: Any) -> tuple[str, str, str, str, int, str]:
    def refuse(why: str) -> ApiError:
        return ApiError(422, "invalid_events", f"events[{index}]: {why}")

    if not isinstance(row, list) or len(row) != 6:
        raise refuse(f"a list {_ROW_RULE}")
    pseudonym, key, kind, item, ts, region = row
    if not is_pseudonym(pseudonym):
        raise refuse("pseudonym: the 32-hex-digit pseudonym (edgerec profiles import computes it)")
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise refuse(f"key: a string of 1 to {MAX_KEY_CHARS} characters, unique per shopper")
    why = check_event(kind, item, ts)
    if why:
        raise refuse(why)
    if not isinstance(region, str):
        raise refuse('region: a market code, or "" for none')
    if region:
        try:
            (region,) = parse_regions(region)
        except ValueError as exc:
            raise refuse(f"region: {exc}") from None
    return pseudonym, key, kind, item, ts, region


@documented("Fold a batch of history events into the shoppers' profile summaries (idempotent)", body=ProfileImport)
async def import_events(request: web.Request) -> web.Response:
    """Body {"events": [[pseudonym, key, kind, item, ts, region], ...]}: folded into the shoppers' summaries; an
    event (pseudonym, key) stored before adds nothing, so importing a file again changes nothing."""
    body = await read_json(request)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_IMPORT_EVENTS:
        raise ApiError(422, "invalid_events", f"events: a list of 1 to {MAX_IMPORT_EVENTS} {_ROW_RULE} rows")
    # Row by row (not as ProfileImport at once), so that the first refused row is named with its own rule.
    rows = [_checked_row(i, row) for i, row in enumerate(events)]
    result = await request.app[STORE].record_profile_events(rows)
    log.info(
        "profile import: %d events (%d new), %d profiles changed, data version %d",
        len(rows),
        result["events_new"],
        result["profiles_changed"],
        result["data_version"],
    )
    return json_response({"events": len(rows), **result})


@documented(
    "Everything the origin holds of one shopper (right of access); 404 when nothing", body=ProfileExport, errors=(404,)
)
async def export_profile(request: web.Request) -> web.Response:
    """Body {"shopper": <pseudonym>}: everything the origin holds of one shopper: the summary the edges get, the
    events it is folded from, and the shopper's stored feedback events; 404 when it holds nothing. A POST, so that
    the pseudonym stays out of URLs, and so out of the audit and access logs that outlive an erasure."""
    pseudonym = checked(await read_json(request), ProfileExport, "invalid_request").shopper
    profile = await request.app[STORE].export_profile(pseudonym)
    try:
        events = await request.app[SINK].events_of(pseudonym)
    except NotImplementedError:
        events = None  # no SQL event sink: the events went to NATS only
    if profile is None and not events:
        raise ApiError(404, "not_found", "the origin holds no profile and no events of this shopper")
    return json_response({"pseudonym": pseudonym, "profile": profile, "stored_events": events})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/admin/profiles/import", import_events)
    router.add_post("/v1/admin/profiles/export", export_profile)

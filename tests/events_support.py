"""Event rows as the edge spools and ships them (a list in `EVENT_FIELDS` order), for the tests of the spool and of
the wire's event schema."""

from __future__ import annotations

import time
from typing import Any

from origin_sync.wire.events import EVENT_FIELDS


def event_row(number: int, **values: Any) -> list:
    """Impression `number` of a GB shopper (id and request id r<number>, data version `number`); `values` set or
    override fields, every other field is None."""
    row = dict.fromkeys(EVENT_FIELDS)
    row.update(
        id=f"r{number}",
        kind="impression",
        ts=time.time(),
        region="GB",
        request_id=f"r{number}",
        offer_ids=["GB-1"],
        model_version="m-1",
        data_version=number,
    )
    row.update(values)
    return [row[field] for field in EVENT_FIELDS]

"""The shapes of the origin's JSON answers as msgspec Structs: what `/openapi.json` documents for each operation,
and what the schemathesis fuzz test checks every real answer against (tests/origin_sync/test_origin_openapi.py)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class ErrorDetail(msgspec.Struct):
    code: str  # stable, machine-readable: not_found, invalid_offer, rate_limited, ...
    message: str  # one line for people, never a secret


class ErrorBody(msgspec.Struct):
    """Every error of the origin, its own and aiohttp's alike (errors.py)."""

    error: ErrorDetail


class StoredOffer(msgspec.Struct):
    """An offer in its canonical form, as stored, signed and synced (times as epoch seconds)."""

    id: str
    sku: str
    title: str
    price: float
    currency: str
    regions: list[str]
    stock: int
    active_from: float | None
    active_to: float | None
    group: str | None
    boost: float


class OfferAnswer(msgspec.Struct):
    offer: StoredOffer
    data_version: int


class OfferRead(msgspec.Struct):
    offer: StoredOffer


class Deleted(msgspec.Struct):
    deleted: str
    data_version: int


class OfferResult(msgspec.Struct):
    id: str | None
    status: Literal["created", "changed", "unchanged", "refused"]
    error: str | msgspec.UnsetType = msgspec.UNSET  # why, when refused


class OfferCounts(msgspec.Struct):
    created: int
    changed: int
    unchanged: int
    refused: int


class OfferBatchAnswer(msgspec.Struct):
    results: list[OfferResult]  # in the order of the offers sent
    counts: OfferCounts
    data_version: int


class ModelEntry(msgspec.Struct):
    version: str
    sha256: str
    state: Literal["published", "candidate", "active", "retired"]
    active: bool


class ModelList(msgspec.Struct):
    models: list[ModelEntry]  # oldest first


class Published(msgspec.Struct):
    model_version: str
    state: str
    data_version: int


class Activated(msgspec.Struct):
    model_version: str
    data_version: int
    changed: bool  # false: the model was already active, nothing was appended
    message: str | msgspec.UnsetType = msgspec.UNSET


class VariantRead(msgspec.Struct):
    name: str
    weight: float


class ExperimentRead(msgspec.Struct):
    """An experiment in its canonical form (times as epoch seconds), each variant's model resolved."""

    id: str
    variants: list[VariantRead]
    start: float | None
    end: float | None
    salt: str
    regions: list[str]


class ExperimentAnswer(msgspec.Struct):
    experiment: ExperimentRead
    data_version: int


class ExperimentOne(msgspec.Struct):
    experiment: ExperimentRead


class ExperimentList(msgspec.Struct):
    experiments: list[ExperimentRead]


class ExperimentReport(msgspec.Struct):
    """Per variant: impressions, CTR, conversion, revenue per currency, tests against the control, the sequential
    decision (docs/api.md, "Experiments at the origin"); `definition` is the experiment."""

    definition: dict[str, Any]


class KeySetRead(msgspec.Struct):
    active: str
    published: dict[str, Any] | None  # the published key set; null before the first rotation step
    held: list[str]  # the ids of the private keys this origin holds


class KeyRotationAnswer(msgspec.Struct):
    key_set: dict[str, Any]
    active: str
    data_version: int


class Status(msgspec.Struct):
    data_version: int
    head_hash: str
    compaction_floor: int
    protocol: int
    key_id: str


class Compacted(msgspec.Struct):
    compaction_floor: int


class AuditEntry(msgspec.Struct):
    ts: float
    actor: str | None
    method: str
    path: str
    target: str | None
    peer: str | None
    status: int


class AuditLog(msgspec.Struct):
    entries: list[AuditEntry]  # newest first


class Erased(msgspec.Struct):
    erased: int


class EventsTaken(msgspec.Struct):
    batch_id: str
    events: int
    duplicate: bool  # a batch id seen before: acknowledged again, nothing stored


class Health(msgspec.Struct):
    status: str


class Ready(msgspec.Struct):
    ready: bool
    data_version: int | msgspec.UnsetType = msgspec.UNSET
    key_id: str | msgspec.UnsetType = msgspec.UNSET
    reason: str | msgspec.UnsetType = msgspec.UNSET  # the kind of failure, when not ready ("draining": stopping)
    draining: bool | msgspec.UnsetType = msgspec.UNSET  # true from SIGTERM on (edgerec.core.shutdown)
    draining_for_s: float | msgspec.UnsetType = msgspec.UNSET
    drain_s: float | msgspec.UnsetType = msgspec.UNSET

"""The sync protocol's vocabulary: its version and headers, the kinds of payload and change, canonical msgpack (what
is hashed and signed), and the hash chain: hash(v) = sha256(hash(v-1) || canonical change bytes).

Signatures, keys and the signed envelope are in signing.py; the schemas of what travels in offers.py,
experiments.py and events.py, their shared ids and limits in fields.py.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import msgpack

# 2: signed envelopes, hash chain, compression, region-scoped tokens, 410 on compacted logs.
# 3: every snapshot, and every delta batch that reaches the head, carries the signed state digest (digest.py).
PROTOCOL_VERSION = 3
MSGPACK_TYPE = "application/x-msgpack"
PROTOCOL_HEADER = "X-Edgerec-Protocol"
SIGNATURE_HEADER = "X-Edgerec-Signature"
KEY_ID_HEADER = "X-Edgerec-Key-Id"
# Trace metadata, not data (unsigned, so it can never change what an edge applies): the traceparents of the sampled
# admin writes whose changes a delta answer carries, comma-separated, so that each edge's applying of a write joins
# the write's trace.
WRITE_TRACES_HEADER = "X-Edgerec-Write-Traces"
MAX_WRITE_TRACES = 16  # traceparents one answer carries at most

KIND_SNAPSHOT = "snapshot"
KIND_DELTAS = "deltas"
KIND_BLOB = "blob"
KIND_PROFILES = "profiles"  # a page of the profile summaries of some regions, for an edge that took a snapshot

GENESIS_HASH = bytes(32)  # the hash "before" version 1

# Change operations in the log; an edge ignores nothing silently: an unknown op is a protocol error.
OP_OFFER_UPSERT = "offer_upsert"
OP_OFFER_DELETE = "offer_delete"
OP_MODEL_ACTIVATE = "model_activate"
# An experiment travels whole, with the refs {version, sha256, manifest} of its variants' models (see experiments.py).
OP_EXPERIMENT_UPSERT = "experiment_upsert"
OP_EXPERIMENT_DELETE = "experiment_delete"
# The origin's signing keys as a whole set {active, keys: [{key_id, public_key, status}]} (signing.py).
OP_SIGNING_KEYS = "signing_keys"
# One shopper's profile summary {pseudonym, summary (bytes, profiles.Summary), summary_ts}, tagged with the regions
# the shopper was seen in, and its erasure {pseudonym}, tagged for every region (profiles.py).
OP_PROFILE_UPSERT = "profile_upsert"
OP_PROFILE_ERASE = "profile_erase"
# What an erased shopper's earlier profile_upsert changes become in the origin's log: their bodies are dropped and
# they are sent to no edge (the next change's signed prev hash bridges them, as another region's change).
OP_REDACTED = "redacted"
OPS = frozenset(
    {
        OP_OFFER_UPSERT,
        OP_OFFER_DELETE,
        OP_MODEL_ACTIVATE,
        OP_EXPERIMENT_UPSERT,
        OP_EXPERIMENT_DELETE,
        OP_SIGNING_KEYS,
        OP_PROFILE_UPSERT,
        OP_PROFILE_ERASE,
    }
)

# A change that concerns every region (models) is tagged with this instead of region codes.
ALL_REGIONS = "*"


class ProtocolError(ValueError):
    """A payload does not follow the sync protocol (wrong version, shape or field)."""


class IntegrityError(ProtocolError):
    """A payload is corrupted, truncated, badly signed, replayed or out of order: refused, never applied.

    `reason` is a short label for metrics: decode, signature, unknown_key, revoked_key, chain, order, region,
    protocol, blob, digest (the state does not match the signed state digest), disk.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


_LEAVES = frozenset({str, int, float, bytes, bool, type(None)})


def _sorted(obj: Any) -> Any:
    # Leaves are passed as they are without a call (most values of an offer are), which makes canonical() of an
    # offer about 4x cheaper; the bytes are the same as a plain recursion's.
    kind = type(obj)
    if kind in _LEAVES:
        return obj
    if kind is dict or isinstance(obj, Mapping):
        return {k: (v if type(v) in _LEAVES else _sorted(v)) for k, v in sorted(obj.items())}
    if kind is list or kind is tuple or isinstance(obj, (list, tuple)):
        return [v if type(v) in _LEAVES else _sorted(v) for v in obj]
    return obj


def canonical(obj: Any) -> bytes:
    """Deterministic msgpack: map keys sorted, tuples as arrays, floats as float64. What is hashed and signed."""
    return msgpack.packb(_sorted(obj), use_bin_type=True)


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"undecodable msgpack payload: {exc}") from exc


def chain_hash(prev_hash: bytes, change_bytes: bytes) -> bytes:
    """The hash chain's link: sha256(previous hash || canonical bytes of the change)."""
    return hashlib.sha256(prev_hash + change_bytes).digest()

"""The signed state digest: one homomorphic hash over everything an edge serves for its regions, so that an edge can
prove its whole copy (offers, model, experiments) from the origin's signature, on disk as on the wire.

The hash is LtHash16 (Bellare and Micciancio's lattice hash, in the parameters of Lewi et al., "Securing Update
Propagation with Homomorphic Hashing", 2019): every element of the state is expanded by SHAKE128 to 1,024 lanes of
16 bits, and the state's vector is the lane-wise sum, mod 2**16, of its elements' vectors. Adding or removing one
element is one vector addition or subtraction, so the origin keeps each region's vector current at O(1) per write
and an edge updates its own at O(changed items) per delta batch; a full recomputation is O(state), done when an edge
loads its copy from disk. Sums compose: an edge of several regions expects the sum of their vectors and the global
one. What is signed and compared is the sha256 of the vector's bytes, the `state_digest` of snapshots and batches.

The elements: `["offer", R, offer]` for each region R an offer is offered in (so one offer counts once per region,
and the regions of an edge add up), `["model", ref]` for the active model and `["experiment", body]` for each
experiment, both in the global scope `*`. The signing-key set is not part of it: it is verified as it arrives.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

import numpy as np

from origin_sync.wire.protocol import ALL_REGIONS, canonical

LANES = 1024  # 16-bit lanes: 2 KiB a vector
_VECTOR_BYTES = 2 * LANES
_DTYPE = np.dtype("<u2")


def zero() -> np.ndarray:
    return np.zeros(LANES, dtype=_DTYPE)


def vector_of(element: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.shake_128(element).digest(_VECTOR_BYTES), dtype=_DTYPE)


_CHUNK = 1024  # elements hashed and summed at a time: 2 MiB of vectors, not 2 KiB times the whole state at once


def sum_of(elements: Iterable[bytes]) -> np.ndarray:
    """The vector of a set of elements (mod 2**16 lane-wise), hashed in one pass, a chunk at a time (100,000
    offers' vectors at once took 200 MB, twice, and left the heap fragmented for good)."""
    total = zero()
    chunk: list[bytes] = []
    for element in elements:
        chunk.append(hashlib.shake_128(element).digest(_VECTOR_BYTES))
        if len(chunk) == _CHUNK:
            total += np.frombuffer(b"".join(chunk), dtype=_DTYPE).reshape(-1, LANES).sum(axis=0, dtype=_DTYPE)
            chunk.clear()
    if chunk:
        total += np.frombuffer(b"".join(chunk), dtype=_DTYPE).reshape(-1, LANES).sum(axis=0, dtype=_DTYPE)
    return total


def checksum(vector: np.ndarray) -> bytes:
    """What the origin signs and the edge compares: sha256 of the vector's little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype=_DTYPE).tobytes()).digest()


def from_bytes(data: bytes) -> np.ndarray:
    if len(data) != _VECTOR_BYTES:
        raise ValueError(f"a state vector is {_VECTOR_BYTES} bytes, not {len(data)}")
    return np.frombuffer(data, dtype=_DTYPE).copy()


def offer_elements(offer: Mapping[str, Any], regions: Iterable[str] | None = None) -> list[tuple[str, bytes]]:
    """(scope, element) of an offer: one per region it is offered in (only those in `regions`, when given)."""
    wanted = None if regions is None else set(regions)
    return [(r, canonical(["offer", r, offer])) for r in offer["regions"] if wanted is None or r in wanted]


def model_element(model: Mapping[str, Any] | None) -> list[tuple[str, bytes]]:
    return [] if model is None else [(ALL_REGIONS, canonical(["model", model]))]


def experiment_element(experiment: Mapping[str, Any] | None) -> list[tuple[str, bytes]]:
    return [] if experiment is None else [(ALL_REGIONS, canonical(["experiment", experiment]))]


def state_vector(
    offers: Iterable[Mapping[str, Any]],
    model: Mapping[str, Any] | None,
    experiments: Iterable[Mapping[str, Any]],
    regions: Iterable[str],
) -> np.ndarray:
    """The vector of a whole served state, from scratch (O(state)): what an edge checks its copy with at load."""
    regions = tuple(regions)
    elements = [e for o in offers for _, e in offer_elements(o, regions)]
    elements += [e for _, e in model_element(model)]
    elements += [e for x in experiments for _, e in experiment_element(x)]
    return sum_of(elements)


def state_digest(
    offers: Iterable[Mapping[str, Any]],
    model: Mapping[str, Any] | None,
    experiments: Iterable[Mapping[str, Any]],
    regions: Iterable[str],
) -> bytes:
    return checksum(state_vector(offers, model, experiments, regions))


class Update:
    """The change one write makes to the scopes' vectors: elements removed (the old value) and added (the new)."""

    def __init__(self) -> None:
        self.removed: list[tuple[str, bytes]] = []
        self.added: list[tuple[str, bytes]] = []

    def replace(self, old: list[tuple[str, bytes]], new: list[tuple[str, bytes]]) -> "Update":
        self.removed += old
        self.added += new
        return self

    def scopes(self) -> set[str]:
        return {s for s, _ in self.removed} | {s for s, _ in self.added}

    def apply(self, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New vectors for the scopes this update touches (missing scopes start at zero); the inputs are untouched."""
        out = {s: (vectors[s].copy() if s in vectors else zero()) for s in self.scopes()}
        for scope in out:  # each side hashed in one pass per scope (a batch of offers is one update)
            out[scope] -= sum_of([e for s, e in self.removed if s == scope])
            out[scope] += sum_of([e for s, e in self.added if s == scope])
        return out


def combined(vectors: Mapping[str, np.ndarray], regions: Iterable[str]) -> np.ndarray:
    """The vector an edge serving `regions` must hold: the sum of its regions' vectors and the global one."""
    total = zero()
    for scope in (*regions, ALL_REGIONS):
        if scope in vectors:
            total += vectors[scope]
    return total

"""The edge's copy on its own disk: the last applied replica (atomically replaced) with the origin's signed proof of
it, and the model blobs."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgerec.core.files import BlobStore, write_atomically
from origin_sync.wire.protocol import (
    KIND_DELTAS,
    KIND_SNAPSHOT,
    IntegrityError,
    ProtocolError,
    canonical,
    pack,
    unpack,
)
from origin_sync.wire.signing import Verifier, merge_key_sets, open_envelope

from .state import (
    Replica,
    check_payload,
    check_state_digest,
    checked_key_set,
    replica_from_snapshot,
)


class LocalCopy:
    """The edge's files under its data dir: the last applied replica (atomically replaced) and model blobs.

    The replica file carries a sha256 of its body (a torn or damaged file is refused) and the origin's signed
    envelope that vouches for its version and chain hash; a replica taken from a snapshot is stored as that
    signed snapshot itself.
    """

    FORMAT = 1

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.replica_path = self.data_dir / "replica.msgpack"
        self.blobs = BlobStore(self.data_dir / "blobs")

    def save(
        self, replica: Replica, proof_kind: str, proof: bytes, last_contact: float | None, origin_version: int
    ) -> None:
        record: dict[str, Any] = {
            "format": self.FORMAT,
            "version": replica.version,
            "head_hash": replica.head_hash,
            "regions": list(replica.regions),
            "proof_kind": proof_kind,
            "proof": proof,
            "last_contact": last_contact,
            "origin_version": origin_version,
            "saved_at": time.time(),
            "key_set": replica.key_set,
        }
        if proof_kind != KIND_SNAPSHOT:
            record["offers"] = [replica.offers[k] for k in sorted(replica.offers)]
            record["model"] = replica.model
            record["experiments"] = [replica.experiments[k] for k in sorted(replica.experiments)]
        body = canonical(record)
        write_atomically(self.replica_path, pack({"sha256": hashlib.sha256(body).digest(), "body": body}))

    def load(self, verifier: Verifier, regions: tuple[str, ...]) -> tuple[Replica, tuple[str, bytes], dict] | None:
        """The persisted replica, checked; None when there is none. IntegrityError when it cannot be trusted."""
        try:
            raw = self.replica_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            outer = unpack(raw)
            body = outer["body"]
            if hashlib.sha256(body).digest() != outer["sha256"]:
                raise IntegrityError("disk", f"{self.replica_path} is damaged (checksum mismatch)")
            record = unpack(body)
        except (ProtocolError, KeyError, TypeError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise IntegrityError("disk", f"{self.replica_path} is unreadable: {exc}") from None
        if record.get("format") != self.FORMAT or tuple(record.get("regions", ())) != regions:
            raise IntegrityError("disk", f"{self.replica_path} is for other regions or another format")
        kind, proof = record["proof_kind"], record["proof"]
        # The key set learnt before the restart: the proof may be signed by an announced key, and a key revoked
        # since stays refused although the configuration still lists it.
        key_set = checked_key_set(record.get("key_set"), None)
        payload = open_envelope(proof, kind, verifier.with_key_set(key_set))
        if kind == KIND_SNAPSHOT:
            replica = replica_from_snapshot(payload, regions)
        else:
            check_payload(payload, KIND_DELTAS, regions)
            replica = Replica(
                version=record["version"],
                regions=regions,
                offers={o["id"]: o for o in record["offers"]},
                model=record["model"],
                head_hash=record["head_hash"],
                experiments={e["id"]: e for e in record.get("experiments") or []},
                key_set=key_set,
            )
            if payload.get("to") != replica.version or payload.get("to_hash") != replica.head_hash:
                raise IntegrityError("disk", "the persisted version is not the one the origin signed")
            # Every offer, the model and the experiments, recomputed from the file (O(state)), against the digest
            # inside the origin's signed batch: an edit of the file, checksum recomputed or not, ends here.
            check_state_digest(replica, payload.get("state_digest"), f"the persisted replica {self.replica_path}")
        if replica.version != record["version"] or replica.head_hash != record["head_hash"]:
            raise IntegrityError("disk", "the persisted version is not the one the origin signed")
        return replace(replica, key_set=merge_key_sets(key_set, replica.key_set)), (kind, proof), record

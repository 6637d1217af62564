"""The origin's signing keys: the private keys it holds, the key set it publishes through the change log, and the
rotation steps (announce a next key, activate it, revoke the old one) as checked transitions of that set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from origin_sync.wire.signing import (
    KEY_ACTIVE,
    KEY_NEXT,
    KEY_REVOKED,
    Signer,
    is_key_id,
    public_key_b64,
    validate_key_set,
)


class KeyRingError(Exception):
    """A rotation step that is refused; `status` and `code` make the admin API's JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _entry(signer: Signer, status: str) -> dict[str, str]:
    return {"key_id": signer.key_id, "public_key": public_key_b64(signer.public_key), "status": status}


@dataclass
class KeyRing:
    """The private keys configured at the origin (EDGEREC_SIGNING_KEY, comma-separated) and the published key set.

    Until a key set is published the first configured key signs, as before key rotation existed. Afterwards the
    set's active key signs; a held key that is announced and not revoked may sign for an edge that does not trust
    the active key yet (see `signer_for`), so that no edge refuses a valid payload during the overlap.
    """

    signers: Sequence[Signer]
    key_set: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.signers:
            raise ValueError("the origin needs a signing key")
        self._held = {s.key_id: s for s in self.signers}

    def adopt(self, key_set: dict[str, Any] | None) -> None:
        """Take the key set stored in the change log (at start, and after each rotation step)."""
        if key_set is not None and key_set["active"] not in self._held:
            raise RuntimeError(
                f"the published key set signs with key {key_set['active']}, which EDGEREC_SIGNING_KEY "
                "does not hold: add that private key to EDGEREC_SIGNING_KEY"
            )
        self.key_set = key_set

    def _statuses(self) -> dict[str, str]:
        return {e["key_id"]: e["status"] for e in (self.key_set or {}).get("keys", ())}

    @property
    def signer(self) -> Signer:
        """The key that signs by default: the active one."""
        return self._held[self.key_set["active"]] if self.key_set else self.signers[0]

    def signer_for(self, trusted_key_ids: frozenset[str] | None) -> Signer:
        """The active key when the edge trusts it (or did not say what it trusts), else a held, announced and
        unrevoked key the edge trusts; else the active one, which that edge will refuse until it learns it."""
        active = self.signer
        if trusted_key_ids is None or active.key_id in trusted_key_ids:
            return active
        statuses = self._statuses()
        for key_id in sorted(trusted_key_ids & self._held.keys()):
            if statuses.get(key_id) == KEY_NEXT:
                return self._held[key_id]
        return active

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/admin/keys` answers: the published set and the ids of the keys held (never a key)."""
        return {"active": self.signer.key_id, "published": self.key_set, "held": sorted(self._held)}

    # -- rotation steps: each maps the stored key set to the next one (inside the store's transaction)

    def _current(self, stored: dict[str, Any] | None) -> dict[str, dict[str, str]]:
        if stored is None:  # the first step publishes the key that signs today as the active one
            return {self.signers[0].key_id: _entry(self.signers[0], KEY_ACTIVE)}
        return {e["key_id"]: dict(e) for e in stored["keys"]}

    def _entries(self, stored: dict[str, Any] | None, key_id: str) -> tuple[dict[str, dict[str, str]], str | None]:
        """The published entries, to change, and the key's status among them (None: not published); a malformed key
        id is refused first."""
        if not is_key_id(key_id):
            raise KeyRingError(422, "invalid_key_id", "a key id is 16 lowercase hex digits (see GET /v1/admin/keys)")
        entries = self._current(stored)
        return entries, entries.get(key_id, {}).get("status")

    @staticmethod
    def _key_set(entries: dict[str, dict[str, str]]) -> dict[str, Any]:
        active = next(k for k, e in entries.items() if e["status"] == KEY_ACTIVE)
        return validate_key_set({"active": active, "keys": list(entries.values())})

    def announced(self, stored: dict[str, Any] | None, key_id: str) -> dict[str, Any]:
        """Publish a held key as `next`: edges learn it and accept it, the active key still signs."""
        entries, status = self._entries(stored, key_id)
        if key_id not in self._held:
            raise KeyRingError(
                404,
                "unknown_key",
                f"the origin holds no private key {key_id}: add it to "
                "EDGEREC_SIGNING_KEY and restart before announcing it",
            )
        if status == KEY_REVOKED:
            raise KeyRingError(409, "key_revoked", f"key {key_id} is revoked; a revoked key never comes back")
        if status is not None:
            raise KeyRingError(409, "already_announced", f"key {key_id} is already published ({status})")
        entries[key_id] = _entry(self._held[key_id], KEY_NEXT)
        return self._key_set(entries)

    def activated(self, stored: dict[str, Any] | None, key_id: str) -> dict[str, Any]:
        """Sign with an announced key from now on; the key that signed until now stays accepted (`next`)."""
        entries, status = self._entries(stored, key_id)
        if status is None:
            raise KeyRingError(
                409,
                "not_announced",
                f"announce key {key_id} first (POST /v1/admin/keys), so that edges trust it before it signs",
            )
        if status != KEY_NEXT:
            raise KeyRingError(409, "key_" + status, f"key {key_id} is {status}")
        if key_id not in self._held:
            raise KeyRingError(409, "unknown_key", f"the origin holds no private key {key_id}")
        for entry in entries.values():
            if entry["status"] == KEY_ACTIVE:
                entry["status"] = KEY_NEXT
        entries[key_id]["status"] = KEY_ACTIVE
        return self._key_set(entries)

    def revoked(self, stored: dict[str, Any] | None, key_id: str) -> dict[str, Any]:
        """Refuse a key for good, at the origin and at every edge that applies the change."""
        entries, status = self._entries(stored, key_id)
        if status is None:
            if key_id not in self._held:
                raise KeyRingError(404, "unknown_key", f"key {key_id} is neither published nor held by the origin")
            entries[key_id] = _entry(self._held[key_id], KEY_REVOKED)
        elif status == KEY_ACTIVE:
            raise KeyRingError(409, "key_active", f"key {key_id} signs now: activate another key before revoking it")
        elif status == KEY_REVOKED:
            raise KeyRingError(409, "key_revoked", f"key {key_id} is already revoked")
        else:
            entries[key_id]["status"] = KEY_REVOKED
        return self._key_set(entries)

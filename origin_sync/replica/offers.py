"""The replica's offers by id, each held as its canonical msgpack bytes and decoded on a read: a decoded offer (a
dict of 11 fields and its strings) takes about 870 bytes of Python memory, its canonical form about 200."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from origin_sync.wire.protocol import canonical, unpack


class PackedOffers(Mapping[str, dict[str, Any]]):
    """A read-only mapping of offer id -> offer (a fresh dict on each read; the replica is replaced whole, never
    patched). The offers are read when a state is built, a delta applied or the replica saved, never per request."""

    __slots__ = ("_packed",)

    def __init__(self, packed: dict[str, bytes]) -> None:
        self._packed = packed

    @classmethod
    def of(cls, offers: Mapping[str, Mapping[str, Any]]) -> "PackedOffers":
        if isinstance(offers, PackedOffers):
            return offers
        # A fresh copy of each id: the given one sits among the decoded offers, which go once this map is built, and
        # one string kept in each of their memory pools would keep every pool (and the process's RSS) as it was.
        return cls({offer_id.encode().decode(): canonical(offer) for offer_id, offer in offers.items()})

    def __getitem__(self, offer_id: str) -> dict[str, Any]:
        offer: dict[str, Any] = unpack(self._packed[offer_id])
        offer["id"] = offer_id  # the key's own string (iterating gives it): a catalog built from it keeps one copy
        return offer

    def __contains__(self, offer_id: object) -> bool:
        return offer_id in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedOffers):
            return self._packed == other._packed
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(self) == len(other) and all(k in other and self[k] == other[k] for k in self._packed)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedOffers({len(self._packed)} offers)"

    def packed(self) -> dict[str, bytes]:
        """A copy of the canonical forms by id, for building the next version's map."""
        return dict(self._packed)

"""What the edge takes from the CDN (geo country, client address, only with the shared secret) and gives back to it
(cache headers, surrogate keys, ETags)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Iterable, Mapping

SECRET_HEADER = b"x-edgerec-cdn-secret"
UNTRUSTED_IGNORE = "ignore"
UNTRUSTED_REFUSE = "refuse"


@dataclass(frozen=True)
class CdnPolicy:
    """How far the edge trusts headers that claim to come from the CDN."""

    secrets: tuple[str, ...] = ()  # accepted shared-secret values (two during a rotation)
    geo_headers: tuple[str, ...] = ("cloudfront-viewer-country", "cf-ipcountry")
    untrusted: str = UNTRUSTED_IGNORE  # what to do with CDN headers that come without the secret
    markets: Mapping[str, str] = field(default_factory=dict)  # viewer country -> market served here
    proxy_hops: int = 1  # X-Forwarded-For entries appended by trusted proxies
    s_maxage: int = 30
    stale_while_revalidate: int = 60

    def __post_init__(self) -> None:
        object.__setattr__(self, "_secret_bytes", tuple(s.encode() for s in self.secrets))
        object.__setattr__(self, "_geo_bytes", tuple(h.lower().encode() for h in self.geo_headers))

    def is_trusted(self, presented: bytes | None) -> bool:
        if presented is None or not self._secret_bytes:  # type: ignore[attr-defined]
            return False
        matches = [hmac.compare_digest(presented, s) for s in self._secret_bytes]  # type: ignore[attr-defined]
        return any(matches)

    @property
    def geo_header_names(self) -> tuple[bytes, ...]:
        return self._geo_bytes  # type: ignore[attr-defined]

    def market_of(self, country: str) -> str:
        country = country.upper()
        return self.markets.get(country, country)


@dataclass(slots=True)
class ViewerInfo:
    """What the request's headers say, after the trust decision."""

    trusted: bool = False
    country: str | None = None  # from the geo header; None unless the CDN is trusted
    client_ip: str | None = None  # from X-Forwarded-For when trusted, else the connection's peer
    cdn_headers_untrusted: bool = False  # CDN headers arrived without a valid secret
    if_none_match: bytes | None = None
    content_type: bytes | None = None
    content_length: bytes | None = None


def read_viewer(headers: Iterable[tuple[bytes, bytes]], peer: str | None, policy: CdnPolicy) -> ViewerInfo:
    """One pass over the raw ASGI headers; CDN-set values count only when the shared secret is right."""
    info = ViewerInfo(client_ip=peer)
    secret = geo = forwarded = None
    geo_names = policy.geo_header_names
    for name, value in headers:
        if name == b"content-type":
            info.content_type = value
        elif name == b"content-length":
            info.content_length = value
        elif name == b"if-none-match":
            info.if_none_match = value
        elif name == SECRET_HEADER:
            secret = value
        elif name in geo_names and geo is None:
            geo = value
        elif name == b"x-forwarded-for":
            forwarded = value if forwarded is None else forwarded + b"," + value
    info.trusted = policy.is_trusted(secret)
    if info.trusted:
        if geo is not None:
            country = geo.decode("latin-1").strip()
            if len(country) == 2 and country.isalpha():
                info.country = country.upper()
        if forwarded is not None:
            hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
            if len(hops) >= policy.proxy_hops:
                info.client_ip = hops[-policy.proxy_hops]
    elif geo is not None or secret is not None:
        info.cdn_headers_untrusted = True
    return info


def etag_for(*parts: object) -> str:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def etag_matches(if_none_match: bytes | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    wanted = etag.encode()
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate == wanted or candidate.removeprefix(b"W/") == wanted:
            return True
    return False


def public_headers(
    policy: CdnPolicy, etag: str, region: str, data_version: int, offer_ids: Iterable[str], vary_on_geo: bool
) -> list[tuple[bytes, bytes]]:
    """Headers of an anonymous, region-level answer: shared caches may keep it and purge it by key."""
    keys = [f"region:{region}", f"data:{data_version}", *(f"offer:{o}" for o in offer_ids)]
    headers = [
        (
            b"cache-control",
            f"public, max-age=0, s-maxage={policy.s_maxage}, "
            f"stale-while-revalidate={policy.stale_while_revalidate}".encode(),
        ),
        (b"etag", etag.encode()),
        (b"surrogate-key", " ".join(keys).encode()),
        (b"cache-tag", ",".join(keys).encode()),
    ]
    if vary_on_geo and policy.geo_headers:
        headers.append((b"vary", ", ".join(policy.geo_headers).encode()))
    return headers

"""Ed25519 keys and the origin's published key set, the signer and the verifier, and the signed envelope.

Everything an edge applies arrives in an envelope: `payload` is the canonical msgpack of a snapshot or delta
batch, `sig` is the origin's Ed25519 signature over exactly those bytes (before compression), `key_id` names
the key. The edge checks the envelope, decompresses with a size cap, verifies the signature, and only then
decodes the payload.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from origin_sync.wire.protocol import (
    PROTOCOL_VERSION,
    IntegrityError,
    ProtocolError,
    canonical,
    pack,
    unpack,
)

# Payloads above this size travel zlib-compressed; the envelope's `encoding` says so.
COMPRESS_OVER_BYTES = 1024
# The most a compressed payload may expand to at the edge: a guard against decompression bombs.
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024

# A key's status in the published key set: "active" signs; "next" is accepted but does not sign (a new key before
# its activation, or the previous key during the overlap after it); "revoked" is refused for good.
KEY_ACTIVE, KEY_NEXT, KEY_REVOKED = "active", "next", "revoked"
KEY_STATUSES = (KEY_ACTIVE, KEY_NEXT, KEY_REVOKED)
# The edge names the key ids it trusts in this request header, so that during an overlap the origin signs with a
# key the edge already knows (the edge verifies in any case: the header is a hint, never a credential).
TRUSTED_KEYS_HEADER = "X-Edgerec-Trusted-Keys"
MAX_KEY_SET_ENTRIES = 64


# -- keys and signatures ---------------------------------------------------------------------------


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A key's id: the first 16 hex digits of sha256 of its raw bytes, so origin and edge agree without config."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _key_material(value: str) -> bytes:
    """A key given as a file path, PEM text or base64: return its bytes (PEM or raw)."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode()
    if os.path.isfile(text):
        return Path(text).read_bytes()
    # Base64 may contain "/", so only an existing file counts as a path; anything else must decode.
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        kind = (
            "key file does not exist"
            if text.endswith(".pem") or text.startswith(("/", "."))
            else "not a file path, PEM or base64 key"
        )
        raise ValueError(f"{kind}: {text[:40]!r}") from None


def load_private_key(value: str) -> Ed25519PrivateKey:
    material = _key_material(value)
    if material.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(material, password=None)
    elif len(material) == 32:
        key = Ed25519PrivateKey.from_private_bytes(material)
    else:
        key = serialization.load_der_private_key(material, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 private key")
    return key


def load_public_key(value: str) -> Ed25519PublicKey:
    material = _key_material(value)
    if material.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(material)
    elif len(material) == 32:
        key = Ed25519PublicKey.from_public_bytes(material)
    else:
        key = serialization.load_der_public_key(material)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the origin public key is not an Ed25519 public key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def generate_key_pair(directory: Path) -> tuple[Path, Path]:
    """Write a fresh Ed25519 pair as `signing_key.pem` (mode 0600) and `signing_key.pub.pem`; for demos and tests."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_path, public_path = directory / "signing_key.pem", directory / "signing_key.pub.pem"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private_key_pem(key))
    public_path.write_text(public_key_pem(key.public_key()))
    return private_path, public_path


class Signer:
    """The origin's signing key. Its repr never shows the key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id_of(private_key.public_key())

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """A public key as it travels in the key set: base64 of its 32 raw bytes."""
    return base64.b64encode(
        public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


def is_key_id(value: object) -> bool:
    return isinstance(value, str) and bool(_KEY_ID_RE.match(value))


def validate_key_set(value: object) -> dict[str, Any]:
    """Check a key set {active, keys: [{key_id, public_key, status}]} and return it in canonical form (keys sorted
    by id). Every key id must be the id of its public key, and exactly one key, the `active` one, is active.
    ProtocolError says what is wrong."""
    if (
        not isinstance(value, dict)
        or set(value) != {"active", "keys"}
        or not isinstance(value["keys"], list)
        or not 0 < len(value["keys"]) <= MAX_KEY_SET_ENTRIES
    ):
        raise ProtocolError(f"a key set is {{active, keys: [1-{MAX_KEY_SET_ENTRIES} entries]}}")
    entries: dict[str, dict[str, str]] = {}
    for entry in value["keys"]:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"key_id", "public_key", "status"}
            or entry["status"] not in KEY_STATUSES
            or not isinstance(entry["public_key"], str)
        ):
            raise ProtocolError("a key set entry is {key_id, public_key (base64), status: active|next|revoked}")
        try:
            public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"], validate=True))
        except ValueError:
            raise ProtocolError(f"key set entry {entry['key_id']!r}: not a base64 Ed25519 public key") from None
        if entry["key_id"] != key_id_of(public_key) or entry["key_id"] in entries:
            raise ProtocolError(f"key set entry {entry['key_id']!r}: the id is not its key's, or is listed twice")
        entries[entry["key_id"]] = {
            "key_id": entry["key_id"],
            "public_key": entry["public_key"],
            "status": entry["status"],
        }
    active = [k for k, e in entries.items() if e["status"] == KEY_ACTIVE]
    if active != [value["active"]]:
        raise ProtocolError("a key set has exactly one active key, the one named by `active`")
    return {"active": value["active"], "keys": [entries[k] for k in sorted(entries)]}


def merge_key_sets(held: dict[str, Any] | None, received: dict[str, Any] | None) -> dict[str, Any] | None:
    """The key set `received`, with every key revoked in `held` still revoked: a revocation is never undone, even
    by a later set (or an older snapshot) that leaves the key out or lists it as valid."""
    if received is None or held is None:
        return received or held
    revoked = {e["key_id"]: e for e in held["keys"] if e["status"] == KEY_REVOKED}
    if revoked.get(received["active"]):
        raise IntegrityError("revoked_key", f"key set makes the revoked key {received['active']} active")
    entries = {e["key_id"]: e for e in received["keys"]}
    entries.update(revoked)
    return {"active": received["active"], "keys": [entries[k] for k in sorted(entries)]}


class Verifier:
    """The public keys an edge trusts, by key id (several during a key rotation).

    Trust is anchored in the configured keys; the origin's signed key set (`with_key_set`) adds the keys it
    announces and revokes key ids, which are refused from then on even when they are configured.
    """

    def __init__(self, public_keys: Iterable[Ed25519PublicKey], key_set: dict[str, Any] | None = None) -> None:
        self.anchors = {key_id_of(k): k for k in public_keys}
        if not self.anchors:
            raise ValueError("no origin public key given")
        self.key_set = key_set
        announced: dict[str, Ed25519PublicKey] = {}
        revoked: set[str] = set()
        for entry in (key_set or {}).get("keys", ()):
            if entry["status"] == KEY_REVOKED:
                revoked.add(entry["key_id"])
            else:
                announced[entry["key_id"]] = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"]))
        self.revoked = frozenset(revoked)
        self.keys = {kid: k for kid, k in {**self.anchors, **announced}.items() if kid not in revoked}

    @classmethod
    def from_config(cls, value: str) -> "Verifier":
        """Comma-separated keys (file paths, PEM or base64), the current one first. PEM holds no commas, so
        several PEM keys are listed the same way."""
        return cls(load_public_key(p) for p in value.split(",") if p.strip())

    def with_key_set(self, key_set: dict[str, Any] | None) -> "Verifier":
        """The same anchors, trusting what `key_set` (already verified and merged) announces and revokes."""
        return self if key_set == self.key_set else Verifier(self.anchors.values(), key_set)

    def verify(self, key_id: object, signature: object, data: bytes) -> None:
        if isinstance(key_id, str) and key_id in self.revoked:
            raise IntegrityError("revoked_key", f"signed with the revoked key id {key_id!r}")
        key = self.keys.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            raise IntegrityError("unknown_key", f"signed with unknown key id {key_id!r}")
        if not isinstance(signature, bytes):
            raise IntegrityError("signature", "missing signature")
        try:
            key.verify(signature, data)
        except InvalidSignature:
            raise IntegrityError("signature", "bad signature") from None


# -- envelopes -------------------------------------------------------------------------------------


def seal(kind: str, payload: dict[str, Any], signer: Signer) -> bytes:
    """Sign a payload and wrap it in the wire envelope (compressed when large)."""
    body = canonical({**payload, "kind": kind, "protocol": PROTOCOL_VERSION})
    signature = signer.sign(body)
    encoding = "identity"
    if len(body) > COMPRESS_OVER_BYTES:
        body, encoding = zlib.compress(body, 6), "zlib"
    return pack(
        {
            "protocol": PROTOCOL_VERSION,
            "kind": kind,
            "key_id": signer.key_id,
            "sig": signature,
            "encoding": encoding,
            "payload": body,
        }
    )


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_PAYLOAD_BYTES)
    except zlib.error as exc:
        raise IntegrityError("decode", f"corrupted compressed payload: {exc}") from None
    if inflater.unconsumed_tail:
        raise IntegrityError("decode", f"payload expands beyond {MAX_PAYLOAD_BYTES} bytes")
    if not inflater.eof:
        raise IntegrityError("decode", "truncated compressed payload")
    return out


def open_envelope(data: bytes, kind: str, verifier: Verifier) -> dict[str, Any]:
    """Check, decompress, verify and decode an envelope; IntegrityError on anything wrong. Nothing is trusted before."""
    try:
        envelope = unpack(data)
    except ProtocolError as exc:
        raise IntegrityError("decode", f"{kind}: {exc}") from None
    if not isinstance(envelope, dict):
        raise IntegrityError("decode", f"{kind}: envelope is not a map")
    if envelope.get("protocol") != PROTOCOL_VERSION:
        raise IntegrityError(
            "protocol", f"{kind}: protocol {envelope.get('protocol')!r}, this edge speaks {PROTOCOL_VERSION}"
        )
    if envelope.get("kind") != kind:
        raise IntegrityError("decode", f"expected a {kind}, got {envelope.get('kind')!r}")
    body = envelope.get("payload")
    if not isinstance(body, bytes):
        raise IntegrityError("decode", f"{kind}: payload missing")
    encoding = envelope.get("encoding", "identity")
    if encoding == "zlib":
        body = _inflate(body)
    elif encoding != "identity":
        raise IntegrityError("decode", f"{kind}: unknown encoding {encoding!r}")
    verifier.verify(envelope.get("key_id"), envelope.get("sig"), body)
    payload = unpack(body)
    # The kind is inside the signed bytes too, so a signed delta batch cannot be passed off as a snapshot.
    if not isinstance(payload, dict) or payload.get("kind") != kind or payload.get("protocol") != PROTOCOL_VERSION:
        raise IntegrityError("decode", f"{kind}: signed payload is not a {kind} of protocol {PROTOCOL_VERSION}")
    return payload


def blob_signing_bytes(sha256: str) -> bytes:
    """What the origin signs for a model blob: its content address (the bytes are then checked against it)."""
    return f"edgerec-blob:{sha256}".encode()

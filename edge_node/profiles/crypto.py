"""Encryption of stored profiles: AES-256-GCM with the pseudonym as associated data, under a key derived by HKDF
from the deployment's pseudonym secret (EDGEREC_PSEUDONYM_KEY), with an info string of its own."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .interface import CorruptRecord

# A distinct info string: the profile key is independent of the pseudonym hash key derived from the same secret.
HKDF_INFO = b"edgerec profile store v1: AES-256-GCM record key"
HKDF_SALT = b"edgerec-profiles"
_FORMAT = b"\x01"
_NONCE_BYTES = 12
OVERHEAD_BYTES = len(_FORMAT) + _NONCE_BYTES + 16  # format byte, random nonce, GCM tag


def derive_profile_key(secret: str) -> bytes:
    """The 32-byte record key; the same secret on every edge of a deployment gives the same key (Redis sharing)."""
    if not secret:
        raise ValueError("the profile store needs the deployment's pseudonym secret (EDGEREC_PSEUDONYM_KEY)")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(secret.encode())


class RecordCipher:
    """Seals and opens record bytes; the pseudonym is bound as associated data, so a record copied under another
    pseudonym does not open."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, pseudonym: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)  # random 96-bit nonces: far below the 2^32 messages a key may take
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, pseudonym.encode())

    def open(self, pseudonym: str, sealed: bytes) -> bytes:
        if len(sealed) < OVERHEAD_BYTES or sealed[:1] != _FORMAT:
            raise CorruptRecord("not a sealed profile record")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], pseudonym.encode())
        except InvalidTag:
            raise CorruptRecord("record does not decrypt (damaged, or sealed with another key)") from None

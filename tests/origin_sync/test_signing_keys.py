"""The edge reads the origin's public key(s) in every form the deployment may give them."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from origin_sync.wire.signing import Verifier, public_key_pem


def _raw_b64(key) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def test_base64_keys_are_read_even_when_they_contain_a_slash():
    keys = [Ed25519PrivateKey.generate().public_key() for _ in range(64)]
    with_slash = [k for k in keys if "/" in _raw_b64(k)]
    assert with_slash  # about half of all keys
    for key in with_slash:
        assert len(Verifier.from_config(_raw_b64(key)).keys) == 1


def test_a_rotation_lists_several_keys_in_any_form(tmp_path):
    old, new, third = (Ed25519PrivateKey.generate().public_key() for _ in range(3))
    path = tmp_path / "third.pub.pem"
    path.write_text(public_key_pem(third))
    verifier = Verifier.from_config(f"{public_key_pem(new)},{_raw_b64(old)},{path}")
    assert len(verifier.keys) == 3


def test_a_missing_key_file_is_named_in_the_error():
    with pytest.raises(ValueError, match="key file does not exist"):
        Verifier.from_config("/etc/edgerec/missing.pub.pem")

"""The two profile store backends of the parametrized suite, and the checks that look into what they keep."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from edge_node.profiles import EmbeddedProfileStore, ProfileCodec
from origin_sync.wire.events import pseudonym_key, pseudonymize

REDIS_URL = os.environ.get("EDGEREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_down() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis to test against
        return f"Redis not reachable at {REDIS_URL} ({type(exc).__name__}: {exc}); scripts/test-services.sh starts it"


class Backend:
    """Opens stores of one kind on the same data, and looks for a pseudonym's traces in what they keep."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.secret = secrets.token_urlsafe(24)
        self.directory = tmp_path / "profiles"
        self.prefix = f"edgerec-test:{secrets.token_hex(8)}:"
        self.stores: list[Any] = []

    def open(self, **settings: Any) -> Any:
        if self.kind == "embedded":
            store: Any = EmbeddedProfileStore(self.directory, self.secret, ProfileCodec(), **settings)
        else:
            from edge_node.profiles.redis_store import RedisProfileStore

            settings.setdefault("retention_s", 3600)
            settings.setdefault("read_timeout_s", 1.0)  # the bounded wait has its own tests; this box is loaded
            settings.setdefault("write_timeout_s", 1.0)
            store = RedisProfileStore(REDIS_URL, self.secret, ProfileCodec(), prefix=self.prefix, **settings)
        self.stores.append(store)
        return store

    def child_args(self) -> dict[str, str]:
        """What a child process needs to open the same store."""
        return {
            "kind": self.kind,
            "directory": str(self.directory),
            "secret": self.secret,
            "url": REDIS_URL,
            "prefix": self.prefix,
        }

    def traces(self, pseudonym: str) -> list[str]:
        """Where the pseudonym (as text or as its 16 raw bytes) still appears: store files, or Redis keys and
        values (every key of the server is scanned, not only this test's prefix)."""
        needles = (pseudonym.encode(), bytes.fromhex(pseudonym))
        found = []
        if self.kind == "embedded":
            for path in sorted(self.directory.rglob("*")):
                if path.is_file() and any(n in path.read_bytes() for n in needles):
                    found.append(path.name)
            return found
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(count=1000):
            value = client.get(key) if client.type(key) == b"string" else b""
            if any(n in key or n in (value or b"") for n in needles):
                found.append(key.decode(errors="replace"))
        return found

    def damage_record(self, pseudonym: str) -> None:
        """Flip one byte of the stored record (the store is closed, or Redis is shared anyway)."""
        if self.kind == "embedded":
            con = sqlite3.connect(self.directory / "profiles.sqlite3", isolation_level=None)
            (record,) = con.execute("SELECT record FROM profiles WHERE pseudonym = ?", (pseudonym,)).fetchone()
            damaged = bytearray(record)
            damaged[len(damaged) // 2] ^= 0x01
            con.execute("UPDATE profiles SET record = ? WHERE pseudonym = ?", (bytes(damaged), pseudonym))
            con.close()
            return
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        record = bytearray(client.get(self.prefix + pseudonym) or b"")
        record[len(record) // 2] ^= 0x01
        client.set(self.prefix + pseudonym, bytes(record))

    def close_all(self) -> None:
        """Tests close their stores in their own event loop; this removes what a Redis test left."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            if keys:
                client.delete(*keys)


def shopper(name: str | None = None) -> str:
    """A shopper's pseudonym as the edge computes it (a fresh random shopper unless named)."""
    return pseudonymize(pseudonym_key("test-pseudonym-secret"), name or secrets.token_hex(8))

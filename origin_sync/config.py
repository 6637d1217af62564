"""Origin configuration: one typed place, read from flags and environment, validated at start."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the flag and the variable."""


MIN_SECRET_CHARS = 16


def secret_list(variable: str) -> tuple[str, ...]:
    """Read a secret that may hold several accepted values ("new,old" during a rotation); the first is current."""
    values = tuple(v.strip() for v in os.environ.get(variable, "").split(",") if v.strip())
    if not values:
        raise ConfigError(f"{variable} must be set")
    if any(len(v) < MIN_SECRET_CHARS for v in values):
        raise ConfigError(f"{variable}: every value must be a secret of at least {MIN_SECRET_CHARS} characters")
    return values


@dataclass(frozen=True)
class OriginConfig:
    host: str
    port: int
    db_path: Path
    blob_dir: Path
    admin_tokens: tuple[str, ...]
    sync_tokens: tuple[str, ...]
    max_wait_s: float = 30.0

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        env = os.environ.get
        parser.add_argument("--host", default=env("EDGEREC_ORIGIN_HOST", "127.0.0.1"),
                            help="listen address (EDGEREC_ORIGIN_HOST, default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=int(env("EDGEREC_ORIGIN_PORT", "8080")),
                            help="listen port (EDGEREC_ORIGIN_PORT, default 8080)")
        parser.add_argument("--db", default=env("EDGEREC_ORIGIN_DB", "var/origin/origin.db"),
                            help="SQLite database path (EDGEREC_ORIGIN_DB)")
        parser.add_argument("--blob-dir", default=env("EDGEREC_BLOB_DIR", "var/origin/blobs"),
                            help="directory of content-addressed model blobs (EDGEREC_BLOB_DIR)")
        parser.add_argument("--max-wait", type=float, default=float(env("EDGEREC_MAX_WAIT_S", "30")),
                            help="longest long-poll in seconds (EDGEREC_MAX_WAIT_S, default 30)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OriginConfig":
        # Secrets come only from the environment so that they never show in a process list.
        admin_tokens = secret_list("EDGEREC_ADMIN_TOKEN")
        sync_tokens = secret_list("EDGEREC_SYNC_TOKEN")
        if set(admin_tokens) & set(sync_tokens):
            raise ConfigError("EDGEREC_ADMIN_TOKEN and EDGEREC_SYNC_TOKEN must not share a value")
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port/EDGEREC_ORIGIN_PORT: {args.port} is not a TCP port")
        if not 0 < args.max_wait <= 300:
            raise ConfigError("--max-wait/EDGEREC_MAX_WAIT_S: between 0 and 300 seconds")
        return cls(
            host=args.host,
            port=args.port,
            db_path=Path(args.db),
            blob_dir=Path(args.blob_dir),
            admin_tokens=admin_tokens,
            sync_tokens=sync_tokens,
            max_wait_s=args.max_wait,
        )

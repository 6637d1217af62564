"""Edge node configuration: one typed place, read from flags and environment, validated at start."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from origin_sync.protocol import parse_regions


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the flag and the variable."""


@dataclass(frozen=True)
class EdgeConfig:
    host: str
    port: int
    origin_url: str
    regions: tuple[str, ...]
    sync_token: str
    data_dir: Path
    max_body_bytes: int = 64 * 1024
    max_k: int = 100
    default_k: int = 10
    sync_wait_s: float = 25.0

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        env = os.environ.get
        parser.add_argument("--host", default=env("EDGEREC_EDGE_HOST", "127.0.0.1"),
                            help="listen address (EDGEREC_EDGE_HOST, default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=int(env("EDGEREC_EDGE_PORT", "8000")),
                            help="listen port (EDGEREC_EDGE_PORT, default 8000)")
        parser.add_argument("--origin", default=env("EDGEREC_ORIGIN_URL", "http://127.0.0.1:8080"),
                            help="origin base URL (EDGEREC_ORIGIN_URL)")
        parser.add_argument("--regions", default=env("EDGEREC_REGIONS", ""),
                            help="comma-separated market codes this edge serves, e.g. DE,FR (EDGEREC_REGIONS)")
        parser.add_argument("--data-dir", default=env("EDGEREC_EDGE_DATA_DIR", "var/edge"),
                            help="local directory for the edge's persisted copy (EDGEREC_EDGE_DATA_DIR)")
        parser.add_argument("--max-body-bytes", type=int, default=int(env("EDGEREC_MAX_BODY_BYTES", "65536")),
                            help="largest accepted request body (EDGEREC_MAX_BODY_BYTES, default 65536)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "EdgeConfig":
        try:
            regions = parse_regions(args.regions)
        except ValueError as exc:
            raise ConfigError(f"--regions/EDGEREC_REGIONS: {exc}") from None
        url = urlparse(args.origin)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"--origin/EDGEREC_ORIGIN_URL: {args.origin!r} is not an http(s) URL")
        # During a rotation the variable holds "new,old"; an edge presents the first.
        sync_token = os.environ.get("EDGEREC_SYNC_TOKEN", "").split(",")[0].strip()
        if not sync_token:
            raise ConfigError("EDGEREC_SYNC_TOKEN must be set (the token this edge presents to the origin)")
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port/EDGEREC_EDGE_PORT: {args.port} is not a TCP port")
        if args.max_body_bytes < 1024:
            raise ConfigError("--max-body-bytes/EDGEREC_MAX_BODY_BYTES: at least 1024")
        return cls(
            host=args.host,
            port=args.port,
            origin_url=args.origin,
            regions=regions,
            sync_token=sync_token,
            data_dir=Path(args.data_dir),
            max_body_bytes=args.max_body_bytes,
        )

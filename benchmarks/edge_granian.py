"""The edge's app on granian's ASGI server instead of uvicorn: the edgerec row of the server A/B.

    python -m benchmarks.edge_granian edge --regions GB,DE ... (the arguments of `edgerec edge`)

Parses the arguments as `edgerec edge` does, hands the config to the app factory through the environment (as the
edge's own worker processes get it) and serves `edge_node.app:app_from_environment` on granian: ASGI, uvloop, one
worker, one runtime thread, no access log. A measurement harness, not a way to deploy: the request bounds of
edge_node/limits.py are uvicorn's, and this server runs without them.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    from edge_node.config import EdgeConfig, config_to_env
    from edgerec.cli.main import build_parser

    args = build_parser().parse_args(argv)
    config = EdgeConfig.from_args(args)
    config_to_env(config)
    Server(
        "edge_node.app:app_from_environment",
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=1,
        runtime_threads=1,
        loop=Loops.uvloop,
        factory=True,
        log_access=False,
        websockets=False,
        backlog=4096,
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `edgerec` command: origin and edge services, model training and evaluation, and the demo."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from edgerec.core.logs import configure_logging


def _origin_serve(args: argparse.Namespace) -> int:
    from origin_sync.origin.api.app import serve
    from origin_sync.origin.config import OriginConfig

    serve(OriginConfig.from_args(args))
    return 0


def _origin_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from origin_sync.wire.signing import Signer, generate_key_pair, load_private_key

    private, public = generate_key_pair(Path(args.out))
    print(
        f"private key {private} (origin: EDGEREC_SIGNING_KEY)\npublic key  {public} (edges: "
        f"EDGEREC_ORIGIN_PUBLIC_KEY)\nkey id      {Signer(load_private_key(str(private))).key_id}"
    )
    return 0


def _edge_serve(args: argparse.Namespace) -> int:
    from edge_node.config import EdgeConfig
    from edge_node.server import serve

    serve(EdgeConfig.from_args(args))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edgerec.cli.demo import run_demo

    return run_demo(serve=args.serve, workdir=args.workdir)


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes as one line on stderr and exit 2, like a bad setting (subcommands' parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from edge_node.config import EdgeConfig
    from models.cli import add_model_commands
    from origin_sync.origin.config import OriginConfig

    parser = _OneLineErrors(prog="edgerec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgerec {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    origin = commands.add_parser("origin", help="the central origin service").add_subparsers(
        dest="action", required=True
    )
    origin_serve = origin.add_parser("serve", help="run the origin (admin + sync API)")
    OriginConfig.add_arguments(origin_serve)
    origin_serve.set_defaults(func=_origin_serve)
    keygen = origin.add_parser("keygen", help="write a new Ed25519 signing key pair (origin private, edges public)")
    keygen.add_argument("--out", required=True, help="directory for signing_key.pem and signing_key.pub.pem")
    keygen.set_defaults(func=_origin_keygen)

    edge = commands.add_parser("edge", help="a regional edge node").add_subparsers(dest="action", required=True)
    edge_serve = edge.add_parser("serve", help="run an edge node")
    EdgeConfig.add_arguments(edge_serve)
    edge_serve.set_defaults(func=_edge_serve)

    model = commands.add_parser("model", help="train and evaluate recommendation models; publish and activate them")
    model_commands = model.add_subparsers(dest="action", required=True)
    add_model_commands(model_commands)
    from edgerec.cli.training import extend_train_command

    extend_train_command(model_commands.choices["train"])

    from edgerec.cli.admin import add_admin_commands
    from edgerec.cli.models_admin import add_model_admin_commands
    from edgerec.cli.offers_import import add_offer_commands
    from edgerec.cli.profiles_admin import add_profile_commands

    add_model_admin_commands(model_commands)
    add_admin_commands(commands)
    from edgerec.cli.pipeline_cli import add_pipeline_commands

    add_pipeline_commands(commands)
    add_offer_commands(commands)
    add_profile_commands(commands)

    demo = commands.add_parser("demo", help="origin + two edges on loopback, end to end")
    demo.add_argument("--serve", action="store_true", help="keep the services running until interrupted")
    demo.add_argument(
        "--workdir",
        default=None,
        help="where the demo keeps its files, logs included (default: a temp dir, deleted at exit "
        "but for the logs, which stay in a directory of their own)",
    )
    demo.set_defaults(func=_demo)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgerec")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "unknown (not installed)"


# The packages of the optional extras (pyproject.toml), and the extra that brings each: a command run in an
# install without its role's extra says what to install instead of a traceback.
EXTRA_OF = {
    "onnx": "train",
    "lightgbm": "train",
    "onnxmltools": "train",
    "tqdm": "train",
    "asyncpg": "origin",
    "nats": "origin",
    "scipy": "origin",
    "matplotlib": "origin",
    "pyarrow": "origin",
    "redis": "edge",
    "locust": "bench",
    "psutil": "bench",
}


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader went away


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # here, where a closed stdout is caught, rather than at exit
    except BrokenPipeError:
        # The reader of stdout went away (`edgerec ... | head`): stop quietly, as a command killed by SIGPIPE would.
        # What is still buffered goes to /dev/null, so that flushing at exit does not fail (and print) again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    from edgerec.cli.admin import AdminError
    from edgerec.core.settings import SettingError

    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except SettingError as exc:  # both services' ConfigError, and secrets or TLS files that cannot be read
        print(f"edgerec: configuration error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"edgerec: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in EXTRA_OF:
            raise
        print(
            f"edgerec: this command needs the `{package}` package, which this install lacks: "
            f"pip install 'edgerec[{EXTRA_OF[package]}]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130

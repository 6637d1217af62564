"""The command-line pieces the benchmarks share: a parser with its required --out, the --data choice, progress."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def say(message: str) -> None:
    print(message, flush=True)


def interruptible(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`run(args)`'s exit status, or 130 (as a shell reports SIGINT) on Ctrl-C instead of a traceback."""
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


def benchmark_parser(module: str, doc: str, outputs: str) -> argparse.ArgumentParser:
    """The parser of `python -m benchmarks.<module>`, described by the first line of its docstring, with --out."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=doc.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help=f"directory for {outputs}")
    return p


def add_data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="auto",
        help="auto (shared Online Retail data when present, else synthetic), synthetic, or a CSV path",
    )

"""`model train` and `model evaluate` subcommands, for the edgerec CLI to mount on its parser.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from models.bundle import BundleError
from models.data import DataError

EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_train(args: argparse.Namespace) -> int:
    # Imported here: training needs the train extra (onnx, tqdm), the parser that mounts it does not.
    from models.train import DEFAULT_CONTEXT_LENGTH, train_bundle

    if not args.data:
        print("edgerec model train: --data is required (a CSV of the Online Retail format)", file=sys.stderr)
        return EXIT_BAD_INPUT
    context_length = args.context_length or DEFAULT_CONTEXT_LENGTH
    try:
        manifest = train_bundle(args.data, args.out, context_length=context_length, progress=True)
    except (DataError, BundleError, OSError) as error:
        print(f"edgerec model train: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    metrics = manifest["training"]["metrics"]
    summary = ", ".join(f"{name} ndcg@10 {values.get('ndcg@10', float('nan')):.3f}" for name, values in metrics.items())
    print(f"bundle {manifest['version']} written to {args.out} (held-out: {summary})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import (
        evaluate,  # keeps `train` usable without evaluation's imports
    )

    try:
        report = evaluate(args.bundle, args.history, args.test)
    except (DataError, BundleError, OSError) as error:
        print(f"edgerec model evaluate: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['users']} users, bundle {report['bundle']}")
    rows = [("model", report["model"])] + list(report["baselines"].items())
    tuned = "; ".join(f"{name} {entry['params']}" for name, entry in report.get("baseline_tuning", {}).items())
    for name, metrics in rows:
        print(f"  {name:<18} " + "  ".join(f"{key} {value:.3f}" for key, value in metrics.items()))
    if tuned:
        print(f"  tuned on the history's last weeks: {tuned}")
    return 0


def add_model_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `train` and `evaluate`; each sets args.func(args) -> exit code."""
    train = subparsers.add_parser("train", help="train a ranking model and write a bundle")
    train.add_argument("--data", help="Online Retail CSV or CSV.gz (or, from edgerec's CLI, --events/--from-origin)")
    train.add_argument("--out", required=True, help="bundle directory to write")
    train.add_argument(
        "--context-length",
        type=_positive_int,
        default=None,
        help="profile items the model reads, its strongest ones (default: models.train.DEFAULT_CONTEXT_LENGTH)",
    )
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("evaluate", help="evaluate a bundle against baselines")
    evaluate.add_argument("--bundle", required=True, help="bundle directory")
    evaluate.add_argument("--history", required=True, help="transactions before the test period")
    evaluate.add_argument("--test", required=True, help="transactions of the test period")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=run_evaluate)

"""`edgerec pipeline run` (one pass, or `--every 24h`) and `edgerec pipeline status`: the learning loop's commands.
Origin URL and admin token as for every admin command (see admin.py)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from edgerec.cli.admin import AdminError, _call, origin_flag
from edgerec.cli.pipeline import STATE_FILE, Pipeline, run_pipeline, stop_by_hand
from edgerec.cli.pipeline_rules import Policy, parse_duration


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shares(text: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(part) / (100 if float(part) > 1 else 1) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected shares like 10,50 (percent) or 0.1,0.5") from None
    if not shares or not all(0 < s < 1 for s in shares):
        raise argparse.ArgumentTypeError(f"{text!r}: every share must be between 0 and 100% (exclusive)")
    return shares


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(
        gate_margin=args.gate_margin,
        stages=args.stages,
        min_impressions=args.min_impressions,
        stage_impressions=args.stage_impressions,
        max_stage_s=args.max_stage,
        alpha=args.alpha,
        max_fallback_increase=args.max_fallback_increase,
        max_error_increase=args.max_error_increase,
        max_p99_model_ms=args.max_p99_model_ms,
    )


def _run(args: argparse.Namespace) -> int:
    pipeline = Pipeline(
        args.origin,
        Path(args.state_dir),
        name=args.name,
        policy=_policy(args),
        events=args.events,
        store=args.store,
        seed=args.seed,
        orders=Path(args.orders) if args.orders else None,
        progress=not args.quiet,
    )
    round_ = run_pipeline(pipeline, every=args.every, watch_for=args.watch_for, poll=args.poll)
    print(_round_line(round_))
    return 0


def _stop(args: argparse.Namespace) -> int:
    round_ = stop_by_hand(Pipeline(args.origin, Path(args.state_dir), name=args.name), args.reason)
    print("no open round" if round_ is None else _round_line(round_))
    return 0


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _round_line(round_: dict[str, Any]) -> str:
    state = round_.get("outcome") or f"at step {round_['step']}"
    look = round_.get("last_look") or {}
    watching = (
        f", last look: {look.get('outcome')} ({look.get('reason')})" if look and not round_.get("outcome") else ""
    )
    return (
        f"round {round_['id']}: {state}; candidate {round_.get('candidate') or '-'} against served "
        f"{round_.get('served') or '-'}{watching}"
    )


def _status(args: argparse.Namespace) -> int:
    path = Path(args.state_dir) / STATE_FILE
    state = json.loads(path.read_text()) if path.is_file() else {"round": None, "rounds": []}
    try:
        decisions = _call(args, "GET", f"/v1/admin/pipeline/decisions?pipeline={args.name}&limit={args.limit}")[
            "decisions"
        ]
    except AdminError as exc:
        decisions, state["origin_error"] = [], str(exc)
    if args.json:
        print(json.dumps({**state, "decisions": decisions}, indent=2, sort_keys=True))
        return 0
    print(f"pipeline {args.name} (state {path})")
    if state["round"] is None:
        print("no round yet (edgerec pipeline run starts one)")
    else:
        print(_round_line(state["round"]))
    for past in reversed(state["rounds"][-10:]):
        print(f"  {_when(past['started'])}  {past['outcome']:<16} candidate {past.get('candidate') or '-'}")
    if "origin_error" in state:
        print(f"decisions at the origin: unavailable ({state['origin_error']})")
    for entry in decisions:
        reason = entry["evidence"].get("reason")
        print(
            f"  {_when(entry['ts'])}  round {entry['round']}  {entry['step']:<10} {entry['decision']:<12}"
            f"{'  ' + reason if reason else ''}"
        )
    return 0


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    origin_flag(parser)
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("EDGEREC_PIPELINE_DIR", "var/pipeline"),
        help="where the pipeline keeps its state and rounds (EDGEREC_PIPELINE_DIR; default var/pipeline)",
    )
    parser.add_argument("--name", default="default", help="the pipeline's name (experiments and decisions carry it)")
    return parser


def add_pipeline_commands(commands: argparse._SubParsersAction) -> None:
    pipeline = commands.add_parser("pipeline", help="the learning loop: retrain, gate, experiment, promote or stop")
    actions = pipeline.add_subparsers(dest="action", required=True)
    run = _common(actions.add_parser("run", help="one pass of the pipeline (or, with --every, forever)"))
    run.add_argument("--every", type=_duration, default=None, help="start a round this often, e.g. 24h (forever)")
    run.add_argument("--watch-for", type=_duration, default=0.0, help="one pass: watch up to this long (default 0)")
    run.add_argument("--poll", type=_duration, default=300.0, help="look at a running experiment this often")
    run.add_argument("--events", metavar="DSN", help="train from this SQL sink (default: the origin's admin API)")
    run.add_argument("--store", help="with --events: the change-log store for offer SKUs (default: beside it)")
    run.add_argument("--seed", type=int, default=0, help="the training seed")
    run.add_argument("--orders", help="the shop's order history (Online Retail CSV) to train on as well")
    defaults = Policy()
    run.add_argument("--gate-margin", type=float, default=defaults.gate_margin, help="NDCG@10 the candidate may lose")
    run.add_argument("--stages", type=_shares, default=defaults.stages, help="candidate's traffic shares: 10,50")
    run.add_argument("--min-impressions", type=int, default=defaults.min_impressions, help="per variant to decide")
    run.add_argument("--stage-impressions", type=int, default=defaults.stage_impressions, help="to end a stage")
    run.add_argument("--max-stage", type=_duration, default=defaults.max_stage_s, help="a stage's longest time")
    run.add_argument("--alpha", type=float, default=defaults.alpha, help="of the sequential test")
    run.add_argument("--max-fallback-increase", type=float, default=defaults.max_fallback_increase)
    run.add_argument("--max-error-increase", type=float, default=defaults.max_error_increase)
    run.add_argument("--max-p99-model-ms", type=float, default=defaults.max_p99_model_ms)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)
    stop = _common(actions.add_parser("stop", help="end the open round now: experiment ended, candidate retired"))
    stop.add_argument("--reason", default="stopped by hand", help="recorded with the decision")
    stop.set_defaults(func=_stop)
    status = _common(actions.add_parser("status", help="the open round, past rounds and the decisions with reasons"))
    status.add_argument("--json", action="store_true", help="print the state and decisions as one JSON object")
    status.add_argument("--limit", type=int, default=20, help="decisions to show")
    status.set_defaults(func=_status)

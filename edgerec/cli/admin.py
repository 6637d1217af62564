"""`edgerec experiments ...` and `edgerec events ...`: admin-API clients (origin URL from --origin or
EDGEREC_ORIGIN_URL, admin token from EDGEREC_ADMIN_TOKEN or the file EDGEREC_ADMIN_TOKEN_FILE names, never from a
flag: `ps` shows flags). `edgerec model publish|list|activate` (models_admin.py) and `edgerec offers import`
(offers_import.py) use the same settings."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import http_call
from edgerec.cli.services import admin_headers
from edgerec.core.settings import secret_from_env
from edgerec.core.tls import client_context


class AdminError(RuntimeError):
    """The origin refused an admin call, or the settings are missing; the message says which."""


def _token() -> str:
    token = secret_from_env("EDGEREC_ADMIN_TOKEN").split(",")[0].strip()
    if not token:
        raise AdminError("EDGEREC_ADMIN_TOKEN (or EDGEREC_ADMIN_TOKEN_FILE) must be set: the origin's admin token")
    return token


def _origin_tls(origin_url: str) -> ssl.SSLContext | None:
    """For an https:// origin: verified against EDGEREC_ORIGIN_CA_FILE (else the system's trust store), presenting
    EDGEREC_CLIENT_CERT_FILE/EDGEREC_CLIENT_KEY_FILE where the origin requires client certificates."""
    if not origin_url.startswith("https://"):
        return None
    paths = [
        os.environ.get(name, "").strip()
        for name in ("EDGEREC_ORIGIN_CA_FILE", "EDGEREC_CLIENT_CERT_FILE", "EDGEREC_CLIENT_KEY_FILE")
    ]
    ca_file, cert_file, key_file = (Path(p) if p else None for p in paths)
    return client_context(ca_file, cert_file, key_file)


def _call(
    args: argparse.Namespace,
    method: str,
    path: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 60,
) -> Any:
    """One admin call: `payload` sent as JSON (or `body` as it is); the answer's JSON. AdminError, one line, for an
    origin that cannot be reached or answers an error."""
    if not args.origin.startswith(("http://", "https://")):
        raise AdminError(f"--origin {args.origin!r}: expected http://HOST:PORT or https://HOST:PORT")
    if body is None and payload is not None:
        body = json.dumps(payload).encode()
    headers = {"Content-Type": content_type, **admin_headers(_token())}
    try:
        status, _, raw = http_call(
            args.origin, method, path, body, headers, timeout=timeout, ssl_context=_origin_tls(args.origin)
        )
    except (OSError, http.client.HTTPException) as exc:
        raise AdminError(f"cannot reach the origin at {args.origin}: {exc or type(exc).__name__}") from None
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = raw.decode(errors="replace")[:300]
    if status >= 400:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else answer
        raise AdminError(f"{method} {path.split('?')[0]}: HTTP {status}: {message}")
    return answer


def origin_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--origin",
        default=os.environ.get("EDGEREC_ORIGIN_URL", "http://127.0.0.1:8080"),
        help="origin base URL (EDGEREC_ORIGIN_URL); the token comes from EDGEREC_ADMIN_TOKEN "
        "or EDGEREC_ADMIN_TOKEN_FILE",
    )
    return parser


def parse_variant(spec: str) -> dict[str, Any]:
    """'treatment:weight=50,model=m-2,max_per_group=2,boost.GB-1=1.5' -> a variant object."""
    name, _, options = spec.partition(":")
    variant: dict[str, Any] = {"name": name.strip()}
    for option in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = option.partition("=")
        if not sep:
            raise AdminError(f"--variant {spec!r}: expected key=value, got {option!r}")
        if key == "weight":
            variant["weight"] = float(value)
        elif key == "model":
            variant["model"] = value
        elif key == "max_per_group":
            variant["max_per_group"] = int(value)
        elif key.startswith("boost."):
            variant.setdefault("boosts", {})[key[len("boost.") :]] = float(value)
        else:
            raise AdminError(f"--variant {spec!r}: unknown option {key!r} (weight, model, max_per_group, boost.OFFER)")
    return variant


def _create(args: argparse.Namespace) -> int:
    experiment: dict[str, Any] = {"id": args.id, "variants": [parse_variant(v) for v in args.variant]}
    for name in ("start", "end", "salt"):
        if getattr(args, name) is not None:
            experiment[name] = getattr(args, name)
    if args.regions:
        experiment["regions"] = [r.strip().upper() for r in args.regions.split(",") if r.strip()]
    body = _call(args, "PUT", f"/v1/admin/experiments/{args.id}", experiment)
    print(f"experiment {args.id} saved at data version {body['data_version']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    body = _call(args, "GET", "/v1/admin/experiments")
    if args.json:
        print(json.dumps(body["experiments"], indent=2))
        return 0
    now = time.time()
    for e in body["experiments"]:
        state = (
            "ended"
            if e["end"] is not None and e["end"] <= now
            else "scheduled"
            if e["start"] is not None and e["start"] > now
            else "running"
        )
        variants = ", ".join(
            f"{v['name']}({v['weight']:g}{', ' + v['model'] if v['model'] else ''})" for v in e["variants"]
        )
        print(f"{e['id']}\t{state}\t{','.join(e['regions']) or 'all regions'}\t{variants}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    """Set the end to now: edges stop assigning at once (with the data version), the events stay for the report."""
    experiment = _call(args, "GET", f"/v1/admin/experiments/{args.id}")["experiment"]
    experiment["end"] = time.time()
    if experiment["start"] is not None and experiment["start"] >= experiment["end"]:
        experiment["start"] = experiment["end"] - 1
    experiment["variants"] = [
        {k: v for k, v in variant.items() if k != "model_ref"} for variant in experiment["variants"]
    ]
    body = _call(args, "PUT", f"/v1/admin/experiments/{args.id}", experiment)
    print(f"experiment {args.id} stopped at data version {body['data_version']}")
    return 0


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _report(args: argparse.Namespace) -> int:
    report = _call(args, "GET", f"/v1/admin/experiments/{args.id}/report")
    if args.plot:
        from origin_sync.origin.report_plot import plot_report

        report["plot"] = plot_report(report, args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"experiment {report['experiment']} (control {report['control']})")
    print(f"{'variant':<16}{'impressions':>12}{'CTR [95% CI]':>28}{'conversion [95% CI]':>28}{'p (conv.)':>11}")
    for name, v in report["variants"].items():
        ctr, conv = v["ctr"], v["conversion"]
        p = v.get("vs_control", {}).get("conversion", {}).get("p_value")
        print(
            f"{name:<16}{v['impressions']:>12}"
            f"{_fmt(ctr['rate']):>10} [{_fmt(ctr['ci_low'])}, {_fmt(ctr['ci_high'])}]"
            f"{_fmt(conv['rate']):>10} [{_fmt(conv['ci_low'])}, {_fmt(conv['ci_high'])}]"
            f"{_fmt(p):>11}"
        )
    # Revenue per currency, never summed across currencies.
    for currency in report.get("currencies", ()):
        test = report["revenue_by_currency"][currency]
        print(f"revenue in {currency} (impressions of {', '.join(test['regions'])}):")
        print(
            f"  {'variant':<14}{'impressions':>12}{'purchases':>11}{'revenue':>14}"
            f"{'revenue/impr [95% CI]':>32}{'p (rev.)':>11}"
        )
        for name, v in report["variants"].items():
            rpi = v["revenue_per_impression"][currency]
            p = v.get("vs_control", {}).get("revenue_per_impression", {}).get(currency, {}).get("p_value")
            print(
                f"  {name:<14}{rpi['impressions']:>12}{rpi['purchases']:>11}{v['revenue'][currency]:>14.2f}"
                f"{_fmt(rpi['mean'], 3):>12} [{_fmt(rpi['ci_low'], 3)}, {_fmt(rpi['ci_high'], 3)}]{_fmt(p):>11}"
            )
        print(
            f"  winner on revenue in {currency}: {test['winner'] or 'none (no significant difference)'}; "
            f"leader {test['leader']}, uplift {_fmt(test['uplift'])}, p={_fmt(test['p_value'])}"
        )
    if not report.get("currencies"):
        print("revenue: no purchases yet")
    srm = report["sample_ratio"]
    print(
        f"sample ratio: chi2={_fmt(srm['chi2'], 2)} p={_fmt(srm['p_value'])}"
        f"{'  MISMATCH: the split is broken, do not trust the results' if srm['mismatch'] else ' (ok)'}"
    )
    print(
        f"winner on conversion (fixed horizon, valid at one planned look): "
        f"{report['winner'] or 'none yet (no significant difference)'}"
        f"; leader {report['leader']}, uplift {_fmt(report['uplift'])}, p={_fmt(report['p_value'])}"
    )
    sequential = report.get("sequential")
    if sequential:
        p_values = ", ".join(f"{v} p={_fmt(p)}" for v, p in sequential["p_values"].items())
        print(
            f"winner on conversion (mSPRT, valid at every look): {sequential['winner'] or 'none yet'}"
            f"{'; losing: ' + ', '.join(sequential['losers']) if sequential['losers'] else ''} ({p_values})"
        )
    print(
        f"unattributed feedback (no impression with its request_id): {report.get('unattributed', 0)}"
        + (
            f" ({', '.join(f'{k} {n}' for k, n in report['unattributed_by_kind'].items())})"
            if report.get("unattributed")
            else ""
        )
    )
    if args.plot:
        print(f"plot: {report['plot']}")
    return 0


def pseudonym_key_from_env() -> bytes:
    """The deployment's pseudonym key (EDGEREC_PSEUDONYM_KEY, the edges' own), with which a shopper id is hashed
    here, on the admin's machine, so that the id never reaches the origin."""
    from origin_sync.wire.events import pseudonym_key

    secret = secret_from_env("EDGEREC_PSEUDONYM_KEY").strip()
    if not secret:
        raise AdminError("EDGEREC_PSEUDONYM_KEY must be set: the same key as the edges', to compute the pseudonym")
    return pseudonym_key(secret)


def _erase(args: argparse.Namespace) -> int:
    from origin_sync.wire.events import pseudonymize

    shopper = pseudonymize(pseudonym_key_from_env(), args.shopper)
    body = _call(args, "POST", "/v1/admin/events/erase", {"shopper": shopper})
    print(
        f"erased {body['erased']} events and the profile ({'held' if body.get('profile_erased') else 'none held'}, "
        f"{body.get('profile_events_erased', 0)} history events); every edge is sent the erasure at data version "
        f"{body.get('data_version')}"
    )
    return 0


def add_admin_commands(commands: argparse._SubParsersAction) -> None:
    experiments = commands.add_parser("experiments", help="A/B experiments at the origin").add_subparsers(
        dest="action", required=True
    )
    create = origin_flag(experiments.add_parser("create", help="create or replace an experiment"))
    create.add_argument("id")
    create.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME[:weight=W,model=VERSION,max_per_group=N,boost.OFFER=X]; the first is the control; "
        "give it twice or more",
    )
    create.add_argument("--start", help="ISO 8601 or epoch seconds (default: now)")
    create.add_argument("--end", help="ISO 8601 or epoch seconds (default: open)")
    create.add_argument("--salt", help="assignment salt (default: the id); a new salt reshuffles shoppers")
    create.add_argument("--regions", help="comma-separated markets (default: every region)")
    create.set_defaults(func=_create)
    listing = origin_flag(experiments.add_parser("list", help="list experiments"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)
    stop = origin_flag(experiments.add_parser("stop", help="end an experiment now (its events stay)"))
    stop.add_argument("id")
    stop.set_defaults(func=_stop)
    report = origin_flag(experiments.add_parser("report", help="per-variant results with CIs and tests"))
    report.add_argument("id")
    report.add_argument("--json", action="store_true", help="print the report as one JSON object")
    report.add_argument("--plot", help="write a PNG of the results here")
    report.set_defaults(func=_report)

    events = commands.add_parser("events", help="feedback events at the origin").add_subparsers(
        dest="action", required=True
    )
    erase = origin_flag(
        events.add_parser("erase", help="delete one shopper's events and profile, at the origin and every edge")
    )
    erase.add_argument("--shopper", required=True, help="the shopper id as the shop knows it")
    erase.set_defaults(func=_erase)

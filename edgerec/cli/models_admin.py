"""`edgerec model publish|list|activate`: a model bundle to the origin and through its states.

A model is `published` (stored, served nowhere), a `candidate` (an experiment's variant may name it; no edge serves
it otherwise), `active` (the model every edge serves) or `retired` (was active or a candidate and was replaced).
Publishing activates only with --activate. Origin URL and admin token as for every admin command (see admin.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgerec.cli.admin import AdminError, _call, origin_flag
from edgerec.cli.services import bundle_upload

MSGPACK = "application/x-msgpack"


def _publish(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    for name in ("manifest.json", "model.onnx"):
        if not (bundle / name).is_file():
            raise AdminError(f"{bundle}: not a model bundle (no {name}); `edgerec model train --out DIR` writes one")
    try:
        _, body = bundle_upload(bundle)
    except (OSError, ValueError) as exc:
        raise AdminError(f"{bundle}: cannot read the bundle ({exc})") from None
    state = "active" if args.activate else "candidate" if args.candidate else "published"
    answer = _call(args, "POST", f"/v1/admin/models?state={state}", body=body, content_type=MSGPACK, timeout=300)
    version, stored = answer["model_version"], answer["state"]
    if stored == "active" and state == "active":
        print(f"model {version} active at data version {answer['data_version']}: every edge serves it")
    elif stored == "active":
        print(f"model {version} is already the active model; left active")
    elif stored == "candidate":
        print(
            f"model {version} stored as a candidate: an experiment's variant may name it (model={version}); "
            f"no edge serves it otherwise"
        )
    else:
        print(
            f"model {version} stored as {stored}: no edge serves it (`edgerec model activate {version}` does; "
            f"--candidate lets experiments use it)"
        )
    return 0


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def format_models(models: list[dict[str, Any]]) -> str:
    """The models as a table: version, state, when published (UTC), sha256 (first 12 hex digits)."""
    rows = [("VERSION", "STATE", "PUBLISHED (UTC)", "SHA256")]
    rows += [(m["version"], m["state"], _when(m.get("created_at")), m["sha256"][:12]) for m in models]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)


def _list(args: argparse.Namespace) -> int:
    models = _call(args, "GET", "/v1/admin/models")["models"]
    if args.json:
        print(json.dumps(models, indent=2))
    elif not models:
        print("no models published yet (edgerec model publish BUNDLE)")
    else:
        print(format_models(models))
    return 0


def _activate(args: argparse.Namespace) -> int:
    answer = _call(args, "POST", f"/v1/admin/models/{quote(args.version, safe='')}/activate")
    print(
        f"model {answer['model_version']} active at data version {answer['data_version']}: every edge serves it "
        f"(the model active before is retired)"
    )
    return 0


def add_model_admin_commands(model_commands: argparse._SubParsersAction) -> None:
    """Register publish, list and activate beside `model train` and `model evaluate`."""
    publish = origin_flag(
        model_commands.add_parser(
            "publish", help="upload a bundle to the origin (stored as published unless --activate or --candidate)"
        )
    )
    publish.add_argument("bundle", metavar="BUNDLE", help="bundle directory (model.onnx + manifest.json)")
    which = publish.add_mutually_exclusive_group()
    which.add_argument("--activate", action="store_true", help="make it the model every edge serves, now")
    which.add_argument(
        "--candidate", action="store_true", help="a candidate: experiments may name it, no edge serves it otherwise"
    )
    publish.set_defaults(func=_publish)

    listing = origin_flag(model_commands.add_parser("list", help="the origin's models and their states"))
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(func=_list)

    activate = origin_flag(
        model_commands.add_parser("activate", help="make a stored model the one every edge serves (also a rollback)")
    )
    activate.add_argument("version", metavar="VERSION", help="a model version (edgerec model list shows them)")
    activate.set_defaults(func=_activate)

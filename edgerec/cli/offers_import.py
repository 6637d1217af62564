"""`edgerec offers import FILE`: offers from a CSV or JSON-lines file into the origin's catalog, in batches.

CSV: a header row of offer fields (id, sku, title, price, currency, regions; optional stock, active_from, active_to,
group, boost), one offer a row; `regions` lists market codes separated by `|` (`GB|DE`); an empty cell leaves the
field out (its default). JSON lines (`.jsonl`, `.ndjson`): one offer object a line, as `PUT /v1/admin/offers/{id}`
takes it. Each batch is one call of `POST /v1/admin/offers` (one transaction at the origin); every line is created,
changed, unchanged (equal to the stored offer: not written) or refused with its reason. Exit 1 if any was refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgerec.cli.admin import AdminError, _call, origin_flag
from origin_sync.wire.offers import OFFER_FIELDS

DEFAULT_BATCH = 500
MAX_BATCH = 1000  # the origin's limit per call
OUTCOMES = ("created", "changed", "unchanged", "refused")


@dataclass
class Line:
    """One offer of the file: where it is, what it holds, and what became of it."""

    number: int
    offer: Any = None
    status: str | None = None
    reason: str | None = None

    @property
    def offer_id(self) -> str | None:
        return self.offer.get("id") if isinstance(self.offer, dict) and isinstance(self.offer.get("id"), str) else None


@dataclass
class Summary:
    lines: list[Line] = field(default_factory=list)
    data_version: int | None = None

    def count(self, status: str) -> int:
        return sum(1 for line in self.lines if line.status == status)


def _number(text: str, kind: type) -> Any:
    """A CSV cell as a number where it reads as one; else the text, which the origin refuses naming the field."""
    try:
        return kind(text)
    except ValueError:
        return text


def _timestamp(text: str) -> Any:
    """Epoch seconds or an ISO 8601 date-time (the origin parses the latter)."""
    try:
        return float(text)
    except ValueError:
        return text


CSV_CELLS = {
    "price": lambda t: _number(t, float),
    "boost": lambda t: _number(t, float),
    "stock": lambda t: _number(t, int),
    "active_from": _timestamp,
    "active_to": _timestamp,
    "regions": lambda t: [r.strip().upper() for r in t.split("|") if r.strip()],
}


def read_csv(path: Path) -> Iterator[Line]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise AdminError(f"{path}: empty file (expected a header row of offer fields)") from None
        unknown = [name for name in header if name not in OFFER_FIELDS]
        if unknown or "id" not in header or len(set(header)) != len(header):
            problem = (
                f"unknown column(s) {', '.join(unknown)}"
                if unknown
                else "no id column"
                if "id" not in header
                else "a column named twice"
            )
            raise AdminError(f"{path}: {problem}; the header names offer fields: {', '.join(OFFER_FIELDS)}")
        start = reader.line_num + 1
        for cells in reader:
            line = Line(start)
            start = reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                line.status, line.reason = "refused", f"{len(cells)} cells, the header has {len(header)}"
            else:
                line.offer = {
                    name: CSV_CELLS.get(name, str)(cell.strip()) for name, cell in zip(header, cells) if cell.strip()
                }
            yield line


def read_jsonl(path: Path) -> Iterator[Line]:
    with open(path, encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            line = Line(number)
            try:
                line.offer = json.loads(text)
            except ValueError as exc:
                line.status, line.reason = "refused", f"not valid JSON ({exc})"
            else:
                if not isinstance(line.offer, dict):
                    line.status, line.reason = "refused", "not a JSON object"
            yield line


def read_offers(path: Path, fmt: str | None) -> list[Line]:
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = "csv" if suffix == ".csv" else "jsonl" if suffix in (".jsonl", ".ndjson") else None
        if fmt is None:
            raise AdminError(f"{path}: cannot tell the format from the name; give --format csv or --format jsonl")
    try:
        return list(read_csv(path) if fmt == "csv" else read_jsonl(path))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AdminError(f"{path}: cannot read it ({exc})") from None


def import_offers(args: argparse.Namespace, lines: list[Line], progress: bool = True) -> Summary:
    from tqdm import tqdm

    summary = Summary(lines)
    pending = [line for line in lines if line.status is None]
    bar = tqdm(total=len(lines), unit="offer", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    bar.update(len(lines) - len(pending))
    sent = 0
    try:
        for i in range(0, len(pending), args.batch_size):
            batch = pending[i : i + args.batch_size]
            try:
                answer = _call(args, "POST", "/v1/admin/offers", {"offers": [line.offer for line in batch]})
            except AdminError as exc:
                stored = "; those are stored, and importing the file again leaves them unchanged" if sent else ""
                raise AdminError(f"{exc} (after {sent} of {len(pending)} offers sent{stored})") from None
            for line, result in zip(batch, answer["results"]):
                line.status, line.reason = result["status"], result.get("error")
            summary.data_version = answer["data_version"]
            sent += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return summary


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise AdminError(f"{path}: no such file")
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise AdminError(f"--batch-size: from 1 to {MAX_BATCH}")
    lines = read_offers(path, args.format)
    if not lines:
        raise AdminError(f"{path}: no offers in it")
    summary = import_offers(args, lines, progress=not args.quiet)
    counts = ", ".join(f"{summary.count(status)} {status}" for status in OUTCOMES)
    version = f" (data version {summary.data_version})" if summary.data_version is not None else ""
    print(f"{path}: {len(lines)} offers: {counts}{version}")
    refused = [line for line in lines if line.status == "refused"]
    for line in refused:
        which = f" (offer {line.offer_id})" if line.offer_id else ""
        print(f"  line {line.number}{which}: refused: {line.reason}")
    if refused:
        raise AdminError(f"offers import: {len(refused)} of {len(lines)} lines refused (listed above)")
    return 0


def add_offer_commands(commands: argparse._SubParsersAction) -> None:
    offers = commands.add_parser("offers", help="the origin's offer catalog").add_subparsers(
        dest="action", required=True
    )
    imports = origin_flag(
        offers.add_parser(
            "import",
            help="create or update offers from a CSV or JSON-lines file",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    imports.add_argument(
        "file",
        metavar="FILE",
        help="a .csv (header row of offer fields, regions as GB|DE) or .jsonl file (one offer object a line)",
    )
    imports.add_argument("--format", choices=("csv", "jsonl"), help="the file's format (default: from its name)")
    imports.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help=f"offers per call (one transaction each; default {DEFAULT_BATCH}, at most {MAX_BATCH})",
    )
    imports.add_argument("--quiet", action="store_true", help="no progress bar")
    imports.set_defaults(func=_import)

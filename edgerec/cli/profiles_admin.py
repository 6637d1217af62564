"""`edgerec profiles import --orders FILE` and `edgerec profiles export --shopper ID`: shoppers' order history into
the origin's profile summaries, and one shopper's stored data out of it (right of access).

The order file has the Online Retail columns (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
CustomerID, Country), as CSV (.csv or .csv.gz) or Parquet. Its real purchases (`models.data`'s cleaning rules:
no cancellations, products only, a customer) become one purchase event per item per invoice, keyed by invoice and
item, so importing a file twice stores each once and changes no summary. CustomerID is hashed here with the
deployment's pseudonym key (EDGEREC_PSEUDONYM_KEY): the origin never sees it. Country gives the region (the
demo's and the benchmarks' mapping, `models.data.COUNTRY_TO_REGION`); a shopper seen in no region reaches no edge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from edgerec.cli.admin import AdminError, _call, origin_flag, pseudonym_key_from_env

DEFAULT_BATCH = 5000
MAX_BATCH = 20_000  # the origin's limit per call (api/admin_profiles.py)
_PARQUET_MAGIC = b"PAR1"


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == _PARQUET_MAGIC


def _read_parquet(path: Path) -> Any:
    """An Online Retail Parquet file as `models.data.Transactions` (pyarrow, the origin extra's)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.data import COLUMNS, NO_CUSTOMER, NO_REGION, DataError, Transactions, region_of_country

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path.name}: cannot read as Parquet ({exc})") from None
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise DataError(f"{path.name}: missing columns {', '.join(missing)} (expected {','.join(COLUMNS)})")
    columns = {name: table.column(name).to_pylist() for name in COLUMNS}
    try:
        dates = np.array(
            [v.isoformat() if hasattr(v, "isoformat") else v for v in columns["InvoiceDate"]], dtype="datetime64[s]"
        )
        customers = np.array(
            [NO_CUSTOMER if v is None or v == "" else int(float(v)) for v in columns["CustomerID"]], dtype=np.int64
        )
        quantity = np.array([int(float(v)) for v in columns["Quantity"]], dtype=np.int64)
        price = np.array([float(v) for v in columns["UnitPrice"]], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path.name}: bad InvoiceDate, CustomerID, Quantity or UnitPrice ({exc})") from None
    countries = np.array([str(v or "").strip() for v in columns["Country"]], dtype=object)
    return Transactions(
        invoice_no=np.array([str(v or "").strip() for v in columns["InvoiceNo"]], dtype=object),
        stock_code=np.array([str(v or "").strip().upper() for v in columns["StockCode"]], dtype=object),
        description=np.array([str(v or "").strip() for v in columns["Description"]], dtype=object),
        quantity=quantity,
        invoiced_at=dates,
        unit_price=price,
        customer_id=customers,
        country=countries,
        region=np.array([region_of_country(c) or NO_REGION for c in countries.tolist()], dtype=object),
    )


def order_events(path: Path, key: bytes, progress: bool) -> list[list[Any]]:
    """The file's purchase events as the origin takes them: [pseudonym, key, kind, item, ts, region] rows, one per
    item per invoice, grouped by shopper. DataError for a file that is missing or not in the column format."""
    from models.data import DataError, purchase_events, read_transactions
    from origin_sync.wire.events import pseudonymize

    if not path.is_file():
        raise DataError(f"no such file: {path}")
    transactions = _read_parquet(path) if _is_parquet(path) else read_transactions(path, progress=progress)
    events = purchase_events(transactions)
    pseudonyms: dict[int, str] = {}
    rows = []
    for invoice, code, at, customer, region in zip(
        events.invoice_no.tolist(),
        events.stock_code.tolist(),
        events.invoiced_at.astype("int64").tolist(),
        events.customer_id.tolist(),
        events.region.tolist(),
    ):
        if customer not in pseudonyms:
            pseudonyms[customer] = pseudonymize(key, str(customer))
        if 0 <= at < 2**32 and 1 <= len(code) <= 64:
            rows.append([pseudonyms[customer], f"order:{invoice}:{code}", "purchase", code, at, region])
    return rows


def batches(rows: list[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    """Batches of about `size` rows that do not split a shopper (but for one larger than MAX_BATCH), so that each
    shopper's summary changes once per import."""
    batch: list[list[Any]] = []
    for i, row in enumerate(rows):
        batch.append(row)
        boundary = i + 1 == len(rows) or rows[i + 1][0] != row[0]
        if (boundary and len(batch) >= size) or len(batch) >= MAX_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.data import DataError

    if not 1 <= args.batch <= MAX_BATCH:
        raise AdminError(f"--batch {args.batch}: from 1 to {MAX_BATCH} events a call")
    key = pseudonym_key_from_env()
    path = Path(args.orders)
    progress = not args.no_progress
    try:
        rows = order_events(path, key, progress)
    except DataError as exc:
        raise AdminError(f"profiles import: {' '.join(str(exc).split())}") from None
    if not rows:
        raise AdminError(f"profiles import: {path.name} holds no purchase of a known customer")
    totals = {"events_new": 0, "profiles_changed": 0, "data_version": None}
    with tqdm(total=len(rows), desc="importing orders", unit=" events", disable=not progress, file=sys.stderr) as bar:
        for batch in batches(rows, args.batch):
            answer = _call(args, "POST", "/v1/admin/profiles/import", {"events": batch}, timeout=300)
            totals["events_new"] += answer["events_new"]
            totals["profiles_changed"] += answer["profiles_changed"]
            totals["data_version"] = answer["data_version"]
            bar.update(len(batch))
    shoppers = len({r[0] for r in rows})
    regionless = len({r[0] for r in rows} - {r[0] for r in rows if r[5]})
    print(
        f"imported {len(rows)} purchase events of {shoppers} shoppers ({regionless} seen in no region) from "
        f"{path.name}: {totals['events_new']} new, {totals['profiles_changed']} profiles changed, "
        f"data version {totals['data_version']}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from origin_sync.wire.events import pseudonymize

    pseudonym = pseudonymize(pseudonym_key_from_env(), args.shopper)
    print(json.dumps(_call(args, "POST", "/v1/admin/profiles/export", {"shopper": pseudonym}), indent=2))
    return 0


def add_profile_commands(commands: argparse._SubParsersAction) -> None:
    profiles = commands.add_parser("profiles", help="shopper profiles at the origin").add_subparsers(
        dest="action", required=True
    )
    imports = origin_flag(
        profiles.add_parser("import", help="fold historical orders into the shoppers' profiles (idempotent)")
    )
    imports.add_argument("--orders", required=True, help="CSV(.gz) or Parquet with the Online Retail columns")
    imports.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="events a call (default %(default)s)")
    imports.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    imports.set_defaults(func=_import)
    export = origin_flag(profiles.add_parser("export", help="one shopper's stored data as JSON (right of access)"))
    export.add_argument("--shopper", required=True, help="the shopper id as the shop knows it (CustomerID)")
    export.set_defaults(func=_export)

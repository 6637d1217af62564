"""Read Online Retail transactions (CSV or CSV.gz) and clean them into purchases and a catalog.

Cleaning rules live here only, so training, evaluation and the demo see the same purchases.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np

COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

NO_CUSTOMER = -1
NO_REGION = ""

# Market codes are ISO-3166 alpha-2; names that are not one market map to None ("no region").
COUNTRY_TO_REGION: dict[str, str | None] = {
    "Australia": "AU",
    "Austria": "AT",
    "Bahrain": "BH",
    "Belgium": "BE",
    "Brazil": "BR",
    "Canada": "CA",
    "Channel Islands": "JE",
    "Cyprus": "CY",
    "Czech Republic": "CZ",
    "Denmark": "DK",
    "EIRE": "IE",
    "European Community": None,
    "Finland": "FI",
    "France": "FR",
    "Germany": "DE",
    "Greece": "GR",
    "Hong Kong": "HK",
    "Iceland": "IS",
    "Israel": "IL",
    "Italy": "IT",
    "Japan": "JP",
    "Lebanon": "LB",
    "Lithuania": "LT",
    "Malta": "MT",
    "Netherlands": "NL",
    "Norway": "NO",
    "Poland": "PL",
    "Portugal": "PT",
    "RSA": "ZA",
    "Saudi Arabia": "SA",
    "Singapore": "SG",
    "Spain": "ES",
    "Sweden": "SE",
    "Switzerland": "CH",
    "USA": "US",
    "United Arab Emirates": "AE",
    "United Kingdom": "GB",
    "Unspecified": None,
}

_PRODUCT_CODE = re.compile(r"^\d{5}")


class DataError(ValueError):
    """The transactions file is missing, unreadable or not in the Online Retail column format."""


def region_of_country(country: str) -> str | None:
    """Market code of a Country value, or None when it names no single market."""
    return COUNTRY_TO_REGION.get(country.strip())


def is_product_code(stock_code: str) -> bool:
    """Products start with five digits; POST, M, DOT, gift vouchers and fees do not."""
    return bool(_PRODUCT_CODE.match(stock_code))


@dataclass(frozen=True)
class Transactions:
    """Line items as parallel numpy arrays, one entry per CSV row, in file order."""

    invoice_no: np.ndarray  # str objects
    stock_code: np.ndarray  # str objects, upper-cased
    description: np.ndarray  # str objects, stripped
    quantity: np.ndarray  # int64
    invoiced_at: np.ndarray  # datetime64[s]
    unit_price: np.ndarray  # float64
    customer_id: np.ndarray  # int64, NO_CUSTOMER when missing
    country: np.ndarray  # str objects
    region: np.ndarray  # str objects, NO_REGION when the country maps to no market

    def __len__(self) -> int:
        return len(self.invoice_no)

    def select(self, rows: np.ndarray) -> Transactions:
        """Rows chosen by a boolean mask or an index array, keeping that order."""
        return Transactions(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _open_text(path: Path) -> io.TextIOBase:
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == b"\x1f\x8b"
    if is_gzip:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _parse_dates(values: list[str]) -> np.ndarray:
    try:
        return np.array(values, dtype="datetime64[s]")
    except ValueError:
        pass
    # The UCI Excel export writes "12/1/2010 8:26"; accept it too rather than fail late.
    try:
        return np.array([datetime.strptime(v.strip(), "%m/%d/%Y %H:%M") for v in values], dtype="datetime64[s]")
    except ValueError as error:
        raise DataError(f"InvoiceDate is neither ISO 8601 nor M/D/YYYY H:MM ({error})") from None


def _rows(reader: Iterator[list[str]], progress: bool, name: str) -> Iterator[list[str]]:
    from tqdm import tqdm  # the train extra's; the edge's CLI imports this module for DataError alone

    return tqdm(reader, desc=f"reading {name}", unit=" rows", disable=not progress, mininterval=0.5)


def read_transactions(path: str | Path, *, progress: bool = False) -> Transactions:
    """Read every row of an Online Retail CSV(.gz); raises DataError on a missing file or columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    columns: dict[str, list[str]] = {name: [] for name in COLUMNS}
    try:
        with _open_text(path) as text:
            reader = csv.reader(text)
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in COLUMNS if name not in header]
            if missing:
                raise DataError(f"{path.name}: missing columns {', '.join(missing)} (expected {','.join(COLUMNS)})")
            positions = [(columns[name].append, header.index(name)) for name in COLUMNS]
            for line_number, row in enumerate(_rows(reader, progress, path.name), start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    raise DataError(f"{path.name}:{line_number}: expected {len(header)} fields, got {len(row)}")
                for append, position in positions:
                    append(row[position])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path.name}: cannot read ({error})") from None

    try:
        quantity = np.array(columns["Quantity"], dtype=np.float64).astype(np.int64)
        unit_price = np.array(columns["UnitPrice"], dtype=np.float64)
        customer_id = np.array([value or NO_CUSTOMER for value in columns["CustomerID"]], dtype=np.float64).astype(
            np.int64
        )
    except ValueError as error:
        raise DataError(f"{path.name}: non-numeric Quantity, UnitPrice or CustomerID ({error})") from None
    countries = np.array([value.strip() for value in columns["Country"]], dtype=object)
    region_by_country = {c: region_of_country(c) or NO_REGION for c in set(countries.tolist())}
    return Transactions(
        invoice_no=np.array([value.strip() for value in columns["InvoiceNo"]], dtype=object),
        stock_code=np.array([value.strip().upper() for value in columns["StockCode"]], dtype=object),
        description=np.array([value.strip() for value in columns["Description"]], dtype=object),
        quantity=quantity,
        invoiced_at=_parse_dates(columns["InvoiceDate"]),
        unit_price=unit_price,
        customer_id=customer_id,
        country=countries,
        region=np.array([region_by_country[c] for c in countries.tolist()], dtype=object),
    )


def purchase_mask(transactions: Transactions, *, require_customer: bool = True) -> np.ndarray:
    """Rows that are real purchases of products (customer-less rows still count for popularity)."""
    not_cancelled = np.array([not no.startswith("C") for no in transactions.invoice_no], dtype=bool)
    is_product = np.array([is_product_code(code) for code in transactions.stock_code], dtype=bool)
    mask = not_cancelled & is_product & (transactions.quantity > 0) & (transactions.unit_price > 0)
    if require_customer:
        mask &= transactions.customer_id != NO_CUSTOMER
    return mask


def clean_purchases(transactions: Transactions, *, require_customer: bool = True) -> Transactions:
    """Only the rows that purchase_mask keeps, in file order."""
    return transactions.select(purchase_mask(transactions, require_customer=require_customer))


def purchase_events(transactions: Transactions) -> Transactions:
    """Per-customer purchase events: one per item per invoice, sorted by customer then time."""
    purchases = clean_purchases(transactions, require_customer=True)
    seen: set[tuple[str, str]] = set()
    first_of_invoice_item = np.zeros(len(purchases), dtype=bool)
    for row, key in enumerate(zip(purchases.invoice_no.tolist(), purchases.stock_code.tolist())):
        if key not in seen:
            seen.add(key)
            first_of_invoice_item[row] = True
    events = purchases.select(first_of_invoice_item)
    # A stable sort keeps file order inside an invoice, so "most recent last" is well defined.
    order = np.lexsort((events.invoiced_at, events.customer_id))
    return events.select(order)


@dataclass(frozen=True)
class CatalogItem:
    """What a shop needs to turn an item into an offer."""

    stock_code: str
    description: str
    unit_price: float
    regions: tuple[str, ...]


def item_catalog(transactions: Transactions) -> dict[str, CatalogItem]:
    """StockCode → most common description, median unit price and the regions where it sold."""
    purchases = clean_purchases(transactions, require_customer=False)
    descriptions: dict[str, Counter[str]] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    regions: dict[str, set[str]] = defaultdict(set)
    for code, description, price, region in zip(
        purchases.stock_code.tolist(),
        purchases.description.tolist(),
        purchases.unit_price.tolist(),
        purchases.region.tolist(),
    ):
        if description:
            descriptions[code][description] += 1
        prices[code].append(price)
        if region != NO_REGION:
            regions[code].add(region)
    return {
        code: CatalogItem(
            stock_code=code,
            description=descriptions[code].most_common(1)[0][0] if descriptions[code] else "",
            unit_price=float(np.median(prices[code])),
            regions=tuple(sorted(regions[code])),
        )
        for code in sorted(prices)
    }

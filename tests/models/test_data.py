from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from models.data import (
    COUNTRY_TO_REGION,
    DataError,
    clean_purchases,
    item_catalog,
    purchase_events,
    read_transactions,
)

HANDWRITTEN = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER ,6,2010-12-01T08:26:00,2.55,17850,United Kingdom
536365,85123a,WHITE HANGING HEART T-LIGHT HOLDER,2,2010-12-01T08:26:00,2.95,17850,United Kingdom
536365,POST,POSTAGE,1,2010-12-01T08:26:00,18.00,17850,United Kingdom
C536379,22633,HAND WARMER UNION JACK,-2,2010-12-01T09:41:00,1.85,17850,United Kingdom
536380,22633,HAND WARMER UNION JACK,0,2010-12-01T09:45:00,1.85,17850,United Kingdom
536381,22634,CHILDS BREAKFAST SET,3,2010-12-01T09:50:00,0.0,12583,France
536382,22728,ALARM CLOCK BAKELIKE PINK,24,2010-12-01T10:00:00,3.75,,Germany
536383,22727,ALARM CLOCK BAKELIKE RED,24,2010-12-01T10:05:00,3.75,12583,France
536384,15056bl,EDWARDIAN PARASOL BLACK,2,2010-12-01T10:10:00,5.95,12662,EIRE
536385,DCGSSBOY,BOYS PARTY BAG,1,2010-12-01T10:15:00,3.29,12662,EIRE
536386,22727,ALARM CLOCK BAKELIKE RED,1,2010-12-01T10:20:00,3.95,12345,European Community
"""

# Every Country value of the shared Online Retail extract (README: 38 distinct).
REAL_COUNTRIES = [
    "Australia",
    "Austria",
    "Bahrain",
    "Belgium",
    "Brazil",
    "Canada",
    "Channel Islands",
    "Cyprus",
    "Czech Republic",
    "Denmark",
    "EIRE",
    "European Community",
    "Finland",
    "France",
    "Germany",
    "Greece",
    "Hong Kong",
    "Iceland",
    "Israel",
    "Italy",
    "Japan",
    "Lebanon",
    "Lithuania",
    "Malta",
    "Netherlands",
    "Norway",
    "Poland",
    "Portugal",
    "RSA",
    "Saudi Arabia",
    "Singapore",
    "Spain",
    "Sweden",
    "Switzerland",
    "USA",
    "United Arab Emirates",
    "United Kingdom",
    "Unspecified",
]


@pytest.fixture()
def handwritten_csv(tmp_path: Path) -> Path:
    path = tmp_path / "small.csv"
    path.write_text(HANDWRITTEN, encoding="utf-8")
    return path


def test_cleaning_keeps_only_product_purchases_with_positive_quantity_and_price(handwritten_csv: Path) -> None:
    purchases = clean_purchases(read_transactions(handwritten_csv), require_customer=False)
    assert purchases.invoice_no.tolist() == ["536365", "536365", "536382", "536383", "536384", "536386"]
    assert purchases.stock_code.tolist() == ["85123A", "85123A", "22728", "22727", "15056BL", "22727"]


def test_cleaning_for_histories_drops_rows_without_customer(handwritten_csv: Path) -> None:
    purchases = clean_purchases(read_transactions(handwritten_csv), require_customer=True)
    assert "536382" not in purchases.invoice_no.tolist()
    assert (purchases.customer_id > 0).all()


def test_purchase_events_keep_one_event_per_item_per_invoice_sorted_by_customer(handwritten_csv: Path) -> None:
    events = purchase_events(read_transactions(handwritten_csv))
    assert list(zip(events.customer_id.tolist(), events.stock_code.tolist())) == [
        (12345, "22727"),
        (12583, "22727"),
        (12662, "15056BL"),
        (17850, "85123A"),
    ]


def test_regions_are_iso_codes_and_non_markets_have_none(handwritten_csv: Path) -> None:
    transactions = read_transactions(handwritten_csv)
    assert set(transactions.region.tolist()) == {"GB", "FR", "DE", "IE", ""}
    assert all(country in COUNTRY_TO_REGION for country in REAL_COUNTRIES)
    assert COUNTRY_TO_REGION["RSA"] == "ZA" and COUNTRY_TO_REGION["Channel Islands"] == "JE"
    assert COUNTRY_TO_REGION["Unspecified"] is None and COUNTRY_TO_REGION["European Community"] is None
    codes = [code for code in COUNTRY_TO_REGION.values() if code]
    assert len(codes) == len(set(codes)) == 36 and all(len(c) == 2 and c.isupper() for c in codes)


def test_catalog_has_common_description_median_price_and_regions(handwritten_csv: Path) -> None:
    catalog = item_catalog(read_transactions(handwritten_csv))
    assert set(catalog) == {"85123A", "22728", "22727", "15056BL"}
    heart = catalog["85123A"]
    assert heart.description == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert heart.unit_price == pytest.approx(2.75)
    assert catalog["22727"].regions == ("FR",)


def test_gzip_and_plain_csv_read_the_same(handwritten_csv: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "small.csv.gz"
    compressed.write_bytes(gzip.compress(handwritten_csv.read_bytes()))
    plain, packed = read_transactions(handwritten_csv), read_transactions(compressed)
    assert plain.stock_code.tolist() == packed.stock_code.tolist()
    assert np.array_equal(plain.invoiced_at, packed.invoiced_at)


def test_missing_columns_and_missing_file_raise_data_error(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("InvoiceNo,StockCode\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing columns"):
        read_transactions(wrong)
    with pytest.raises(DataError, match="no such file"):
        read_transactions(tmp_path / "absent.csv")

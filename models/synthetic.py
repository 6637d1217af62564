"""Generate a small, realistic, seeded transactions file in the Online Retail format.

It has the signals the ranker uses (regional taste, Zipf popularity, repeats, baskets around a
theme, Christmas seasonality) and the dirt the cleaner removes (cancellations, postage, no customer).
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import COLUMNS

# Country mix roughly like the real shop: mostly UK, then European wholesalers.
_COUNTRY_SHARES = {
    "United Kingdom": 0.55,
    "Germany": 0.13,
    "France": 0.12,
    "EIRE": 0.07,
    "Spain": 0.05,
    "Netherlands": 0.05,
    "Unspecified": 0.03,
}
_ADJECTIVES = ["VINTAGE", "RETRO", "HANGING", "SMALL", "LARGE", "PAINTED", "GLASS", "WOODEN", "FELT", "PAPER"]
_COLOURS = ["RED", "PINK", "BLUE", "IVORY", "GREEN", "WHITE", "BLACK", "GOLD", "SILVER", "PASTEL"]
_NOUNS = [
    "HEART T-LIGHT HOLDER",
    "LANTERN",
    "BUNTING",
    "LUNCH BAG",
    "MUG",
    "CAKE STAND",
    "DOORMAT",
    "PHOTO FRAME",
    "ALARM CLOCK",
    "JAM JAR",
    "TEA TOWEL",
    "NAPKINS",
    "CHRISTMAS BAUBLE",
    "CANDLE",
]
_FIRST_DAY = np.datetime64("2010-12-01T00:00:00", "s")
_DAYS = 365


@dataclass(frozen=True)
class SyntheticShape:
    """How big the generated shop is; the defaults make ~20k lines in well under a second."""

    customers: int = 300
    items: int = 400
    topics: int = 12
    mean_invoices_per_customer: float = 6.0
    mean_lines_per_invoice: float = 10.0
    repeat_probability: float = 0.3
    anonymous_invoice_share: float = 0.1
    cancelled_invoice_share: float = 0.02


def _season_boost(day_of_year: np.ndarray) -> np.ndarray:
    """Christmas items sell most from September to early December (day 0 is 1 December)."""
    peak = 360.0  # late November
    distance = np.minimum(np.abs(day_of_year - peak), _DAYS - np.abs(day_of_year - peak))
    return 0.2 + 4.0 * np.exp(-((distance / 45.0) ** 2))


def _stock_codes(rng: np.random.Generator, count: int) -> list[str]:
    numbers = rng.choice(np.arange(20000, 90000), size=count, replace=False)
    codes = []
    for number in numbers.tolist():
        suffix = "" if rng.random() < 0.7 else "ABCDEFG"[int(rng.integers(7))]
        codes.append(f"{number}{suffix}")
    return codes


def generate_rows(seed: int = 7, shape: SyntheticShape = SyntheticShape()) -> list[tuple[str, ...]]:
    """All rows (without header), sorted by invoice date, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    codes = _stock_codes(rng, shape.items)
    descriptions = [
        f"{_ADJECTIVES[i % 10]} {_COLOURS[(i // 10) % 10]} {_NOUNS[i % len(_NOUNS)]}"
        + (f" {i // 100}" if i >= 100 else "")
        for i in range(shape.items)
    ]
    prices = np.round(np.exp(rng.normal(1.0, 0.6, shape.items)), 2).clip(0.19, 50.0)
    item_topic = rng.integers(shape.topics, size=shape.items)
    popularity = 1.0 / (1.0 + rng.permutation(shape.items)) ** 1.1  # Zipf skew
    christmas = rng.random(shape.items) < 0.12

    countries = list(_COUNTRY_SHARES)
    country_taste = {
        country: np.exp(rng.normal(0.0, 0.9, shape.topics))[item_topic] * np.exp(rng.normal(0.0, 0.5, shape.items))
        for country in countries
    }

    invoices: list[tuple[float, int | None, str, np.ndarray]] = []
    for customer in range(shape.customers):
        country = countries[int(rng.choice(len(countries), p=list(_COUNTRY_SHARES.values())))]
        topic_taste = rng.dirichlet(np.full(shape.topics, 0.4))[item_topic]
        taste = popularity * country_taste[country] * (0.05 + topic_taste)
        favourites = rng.choice(shape.items, size=int(rng.integers(3, 10)), replace=False, p=taste / taste.sum())
        invoice_count = 1 + rng.poisson(shape.mean_invoices_per_customer - 1)
        days = np.sort(rng.uniform(0, _DAYS, invoice_count))
        bought: list[int] = []
        for day in days.tolist():
            # Each basket has a theme, which is what makes items co-occur.
            theme = rng.choice(
                shape.topics, p=np.bincount(item_topic, weights=topic_taste, minlength=shape.topics) / topic_taste.sum()
            )
            weights = taste * np.where(item_topic == theme, 4.0, 1.0)
            weights = weights * np.where(christmas, _season_boost(np.array(day)), 1.0)
            weights /= weights.sum()
            lines = 1 + rng.poisson(shape.mean_lines_per_invoice - 1)
            picks = rng.choice(shape.items, size=lines, p=weights)
            repeat = rng.random(lines) < shape.repeat_probability
            if bought:
                pool = np.concatenate([favourites, np.array(bought[-30:])])
                picks = np.where(repeat, rng.choice(pool, size=lines), picks)
            bought.extend(picks.tolist())
            invoices.append((day, customer, country, picks))

    anonymous = int(len(invoices) * shape.anonymous_invoice_share)
    for _ in range(anonymous):
        country = countries[int(rng.choice(len(countries), p=list(_COUNTRY_SHARES.values())))]
        weights = popularity * country_taste[country]
        picks = rng.choice(shape.items, size=1 + rng.poisson(4), p=weights / weights.sum())
        invoices.append((float(rng.uniform(0, _DAYS)), None, country, picks))

    invoices.sort(key=lambda invoice: invoice[0])
    rows: list[tuple[str, ...]] = []
    quantities = np.array([1, 2, 3, 4, 6, 12, 24])
    for number, (day, customer, country, picks) in enumerate(invoices, start=536365):
        minute = int(8 * 60 + rng.integers(10 * 60))
        when = _FIRST_DAY + np.timedelta64(int(day) * 86400 + minute * 60, "s")
        stamp = str(when)
        customer_id = "" if customer is None else str(12346 + customer)
        lines = []
        for item in picks.tolist():
            code = codes[item].lower() if rng.random() < 0.02 else codes[item]
            price = f"{prices[item]:.2f}" if rng.random() > 0.005 else "0.0"
            quantity = int(quantities[rng.integers(len(quantities))])
            lines.append((code, descriptions[item], quantity, price))
        if rng.random() < 0.1:
            lines.append(("POST", "POSTAGE", 1, "18.00"))
        for code, description, quantity, price in lines:
            rows.append((str(number), code, description, str(quantity), stamp, price, customer_id, country))
        if customer is not None and rng.random() < shape.cancelled_invoice_share:
            code, description, quantity, price = lines[0]
            rows.append((f"C{number}", code, description, str(-quantity), stamp, price, customer_id, country))
    return rows


def write_synthetic_transactions(path: str | Path, *, seed: int = 7, shape: SyntheticShape = SyntheticShape()) -> Path:
    """Write the generated rows as CSV, gzip-compressed when the name ends in .gz; same seed, same bytes."""
    path = Path(path)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(generate_rows(seed, shape))
    data = buffer.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps the gzip header, and so the bytes, identical across runs.
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path

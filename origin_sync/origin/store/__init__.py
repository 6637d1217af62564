"""The origin's source of truth: offers, models, experiments and an append-only, hash-chained change log, in SQLite
(the embedded default) or PostgreSQL (production: several origins on one database).

Every write appends changes whose versions continue one gapless sequence and whose hashes extend the chain:
hash(v) = sha256(hash(v-1) || canonical change bytes); the state digests advance in the same transaction.

One SQL code path: each module here (`changelog`, `digests`, `offers`, `models`, `experiments`, `signing_keys`,
`audit`, `blobs`, `schema`) writes its statements once, against `dialect.Connection`, and `facade.ChangeLogStore`
runs each public method as one transaction on an engine. We chose a thin dialect layer over SQLAlchemy Core: the
two engines already agree on the SQL we need (`$n` placeholders rewritten as SQLite's `?n`, `ON CONFLICT`,
`RETURNING`), what differs fits in a dozen small methods (column types, list values, row and advisory locks,
NOTIFY, COPY), and it keeps asyncpg's speed and SQLite's one thread hop per transaction, where SQLAlchemy's async
layer would add a greenlet bridge and a compiler to every statement and a dependency to the origin.
"""

from edgerec.core.files import NotFound, write_atomically
from origin_sync.origin.store.facade import ChangeLogStore, PostgresStore, SQLiteStore, open_store
from origin_sync.origin.store.types import (
    MODEL_ACTIVE,
    MODEL_CANDIDATE,
    MODEL_PUBLISHED,
    MODEL_RETIRED,
    MODEL_STATES,
    PAGE_LIMIT,
    PUBLISH_STATES,
    AheadOfOrigin,
    Compacted,
    DeltaPage,
    KeySetUpdate,
    LogHead,
    OfferUpdate,
    UnservableModel,
)

__all__ = [
    "ChangeLogStore",
    "SQLiteStore",
    "PostgresStore",
    "NotFound",
    "Compacted",
    "AheadOfOrigin",
    "DeltaPage",
    "LogHead",
    "open_store",
    "write_atomically",
    "MODEL_STATES",
    "MODEL_PUBLISHED",
    "MODEL_CANDIDATE",
    "MODEL_ACTIVE",
    "MODEL_RETIRED",
    "UnservableModel",
    "OfferUpdate",
    "PUBLISH_STATES",
    "PAGE_LIMIT",
    "KeySetUpdate",
]

"""Running a scenario against the origin's change-log store on each backend: SQLite, and PostgreSQL in a schema of
its own (the `pg_schema` fixture: created and dropped, so runs never collide)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from origin_sync.origin.store import ChangeLogStore, PostgresStore, SQLiteStore
from tests.conftest import PG_DSN, needs_pg

BACKENDS = ["sqlite", pytest.param("postgres", marks=needs_pg)]


def run_on_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, scenario: Callable[[ChangeLogStore], Awaitable[None]]
) -> None:
    """Open a store of `kind` ("sqlite" or "postgres"), run `scenario` on it, close it."""
    schema = request.getfixturevalue("pg_schema").name if kind == "postgres" else None

    async def main() -> None:
        store: ChangeLogStore = (
            SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs")
            if schema is None
            else PostgresStore(PG_DSN, tmp_path / "blobs", schema=schema)
        )
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())

"""The thin dialect layer under the one SQL path: a connection per engine (SQLite, PostgreSQL) that runs statements
written once, PostgreSQL-style, and the transactions the store and the event sinks take on it.

Statements use `$1` placeholders, `INSERT ... ON CONFLICT`, and `RETURNING`, which both engines speak; SQLite gets
them as `?1`. What differs is said here and only here: column types, list values (a JSON text in SQLite, a `text[]`
in PostgreSQL) and how to test them, row locks, advisory locks, notifications, and bulk copy.

SQLite's connection methods are coroutines that never suspend: a whole transaction is one coroutine that
`SQLiteEngine` runs to its end inside one worker thread (one thread hop per transaction, not per statement), under
BEGIN IMMEDIATE; PostgreSQL's are asyncpg's own awaits.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import json
import logging
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar

T = TypeVar("T")
Row = Any  # a tuple (SQLite) or an asyncpg.Record: read by position
Work = Callable[["Connection"], Awaitable[T]]
log = logging.getLogger("edgerec.origin.store")


class Connection(abc.ABC):
    """One engine's connection, inside or outside a transaction; every method is awaited the same way on both."""

    types: dict[str, str]  # the column types the schema is written with: {bigint}, {bytes}, {real}, ...
    for_update = ""  # the row lock a write takes on a row it reads; "" where the transaction holds the database
    blobs_in_database = False  # model blobs kept in the database too (several origins share no disk)

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row:
        """The first row, or None."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows into `table` the fastest way the engine has."""

    @abc.abstractmethod
    async def has_column(self, table: str, column: str) -> bool: ...

    @abc.abstractmethod
    async def has_index(self, name: str) -> bool: ...

    async def lock(self, key: int) -> None:  # noqa: B027 - SQLite's BEGIN IMMEDIATE already excludes other writers
        """Take a transaction-scoped lock named by `key` (schema creation by several processes at once)."""

    async def notify(self, payload: str) -> None:  # noqa: B027 - SQLite: nothing listens across processes
        """Tell the other processes' listeners that something changed (sent at commit)."""

    @abc.abstractmethod
    def text_list(self, values: Sequence[str]) -> Any:
        """A list of strings as this engine stores and binds it."""

    @abc.abstractmethod
    def overlaps(self, column: str, param: int) -> str:
        """SQL true where the list in `column` shares an element with the list bound at `$param`."""

    @abc.abstractmethod
    def is_in(self, column: str, param: int) -> str:
        """SQL true where `column` equals one element of the list bound at `$param`."""


@functools.lru_cache(maxsize=1024)
def _sqlite_sql(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


class SQLiteConnection(Connection):
    types = {
        "bigint": "INTEGER",
        "bytes": "BLOB",
        "real": "REAL",
        "text_list": "TEXT",
        "empty_list": "'[]'",
        "serial_key": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._db.execute(_sqlite_sql(sql), args).fetchall()

    async def execute(self, sql: str, *args: Any) -> int:
        return max(self._db.execute(_sqlite_sql(sql), args).rowcount, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(_sqlite_sql(sql), rows)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(
            f"INSERT INTO {table}({', '.join(columns)}) "  # nosec B608 - constant names
            f"VALUES ({', '.join('?' * len(columns))})",
            rows,
        )

    async def has_column(self, table: str, column: str) -> bool:
        return column in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    async def has_index(self, name: str) -> bool:
        return await self.fetchval("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = $1", name) is not None

    def text_list(self, values: Sequence[str]) -> Any:
        return json.dumps(list(values))

    def overlaps(self, column: str, param: int) -> str:
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value IN (SELECT value FROM json_each(${param})))"

    def is_in(self, column: str, param: int) -> str:
        return f"{column} IN (SELECT value FROM json_each(${param}))"


class PostgresConnection(Connection):
    types = {
        "bigint": "BIGINT",
        "bytes": "BYTEA",
        "real": "DOUBLE PRECISION",
        "text_list": "TEXT[]",
        "empty_list": "'{}'",
        "serial_key": "BIGSERIAL PRIMARY KEY",
    }
    for_update = " FOR UPDATE"
    blobs_in_database = True

    def __init__(self, conn: Any, channel: str | None) -> None:
        self._conn, self._channel = conn, channel

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row:
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        count = (await self._conn.execute(sql, *args)).rsplit(" ", 1)[-1]  # a status such as "DELETE 3"
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))

    async def has_column(self, table: str, column: str) -> bool:
        return (
            await self._conn.fetchval(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = $1 AND column_name = $2",
                table,
                column,
            )
            is not None
        )

    async def has_index(self, name: str) -> bool:
        return (
            await self._conn.fetchval(
                "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1", name
            )
            is not None
        )

    async def lock(self, key: int) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", key)

    async def notify(self, payload: str) -> None:
        if self._channel is not None:
            await self._conn.execute("SELECT pg_notify($1, $2)", self._channel, payload)

    def text_list(self, values: Sequence[str]) -> Any:
        return list(values)

    def overlaps(self, column: str, param: int) -> str:
        return f"{column} && ${param}::text[]"

    def is_in(self, column: str, param: int) -> str:
        return f"{column} = ANY(${param}::text[])"


class Engine(abc.ABC):
    """A database: where transactions run, and how other processes' commits are heard."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def transaction(self, work: Work[T], *, write: bool) -> T:
        """Run `work` in one transaction: a write excludes other writers' commits in between (SQLite: the database,
        PostgreSQL: the rows it locks), a read sees one snapshot. An exception rolls it back."""

    @abc.abstractmethod
    async def run(self, work: Work[T]) -> T:
        """Run `work` outside a transaction: each statement commits alone."""

    async def listen(self, callback: Callable[[], None]) -> None:  # noqa: B027 - SQLite: see SQLiteStore
        """Call `callback` in the event loop when another process notifies."""


def _complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends: SQLite work, whose awaits are calls made on the spot."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("SQLite work awaited something that is not SQLite")


class SQLiteEngine(Engine):
    """One SQLite file (WAL, synchronous=FULL), used from worker threads under one lock."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self._conn = SQLiteConnection(self.db)
        self._lock = threading.Lock()

    def transaction_now(self, work: Work[T], *, write: bool) -> T:
        """`transaction`, in the calling thread (for set-up before there is an event loop)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result: T = _complete(work(self._conn))  # type: ignore[arg-type]
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return result

    async def transaction(self, work: Work[T], *, write: bool) -> T:
        return await asyncio.to_thread(self.transaction_now, work, write=write)

    def _run_now(self, work: Work[T]) -> T:
        with self._lock:
            result: T = _complete(work(self._conn))  # type: ignore[arg-type]
            return result

    async def run(self, work: Work[T]) -> T:
        return await asyncio.to_thread(self._run_now, work)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                self.db.close()

        await asyncio.to_thread(close)


class PostgresEngine(Engine):
    """An asyncpg pool on one database (optionally one schema of it), and a connection that LISTENs on `channel`."""

    def __init__(
        self, dsn: str, schema: str | None = None, *, channel: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> None:
        self.dsn, self.schema, self.channel = dsn, schema, channel
        self._settings = {"search_path": schema} if schema else {}
        self._pool_args = {"min_size": min_size, "max_size": max_size}
        self._pool: Any = None
        self._listen_conn: Any = None
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        self._pool = await asyncpg.create_pool(self.dsn, server_settings=self._settings, **self._pool_args)

    async def close(self) -> None:
        self._closing = True
        if self._relisten is not None:
            self._relisten.cancel()
        if self._listen_conn is not None:
            await self._listen_conn.close()
        if self._pool is not None:
            await self._pool.close()

    async def transaction(self, work: Work[T], *, write: bool) -> T:
        async with self._pool.acquire() as conn:
            kind = conn.transaction() if write else conn.transaction(isolation="repeatable_read", readonly=True)
            async with kind:
                return await work(PostgresConnection(conn, self.channel))

    async def run(self, work: Work[T]) -> T:
        async with self._pool.acquire() as conn:
            return await work(PostgresConnection(conn, self.channel))

    async def listen(self, callback: Callable[[], None]) -> None:
        """LISTEN on `channel` on a connection of its own; when the server ends that connection (a restart, a
        failover to a promoted standby), reconnect with backoff and call `callback` once on reconnecting, since
        notifications sent meanwhile were lost."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn, server_settings=self._settings)
        await conn.add_listener(self.channel, lambda *_: callback())
        conn.add_termination_listener(lambda _conn: self._lost_listener(callback))
        self._listen_conn = conn

    def _lost_listener(self, callback: Callable[[], None]) -> None:
        if not self._closing and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again(callback))

    async def _listen_again(self, callback: Callable[[], None]) -> None:
        import asyncpg

        delay = 0.1
        while not self._closing:
            try:
                await self.listen(callback)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                # a refused connection, a server still starting up or still in recovery
                log.warning("LISTEN %s lost; reconnecting in %.1f s: %s", self.channel, delay, type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                log.info("LISTEN %s connected again", self.channel)
                callback()
                return

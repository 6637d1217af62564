"""The credentials in force, re-read on SIGHUP and whenever one of their files changes (a token rotation needs no
restart)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from edgerec.core.settings import SettingError
from origin_sync.origin.credentials import Credentials
from origin_sync.origin.tokens import load_credentials

from .metrics import OriginMetrics

log = logging.getLogger("edgerec.origin")

# How often the files holding tokens are checked for a change (a rotation); SIGHUP reloads at once.
CREDENTIAL_CHECK_S = 1.0


class CredentialReloader:
    """A reload that fails (unreadable file, bad JSON, short token) keeps the credentials in force, logs why and is
    counted, so that a mistake during a rotation never locks every edge and operator out."""

    def __init__(self, credentials: Credentials, metrics: OriginMetrics) -> None:
        self.current = credentials
        self._metrics = metrics
        self._seen = self._file_states()

    def _file_states(self) -> tuple[tuple[str, float, int] | None, ...]:
        states: list[tuple[str, float, int] | None] = []
        for path in self.current.sources:
            try:
                stat = path.stat()
                states.append((str(path), stat.st_mtime, stat.st_size))
            except OSError:
                states.append(None)
        return tuple(states)

    def reload(self, why: str) -> bool:
        try:
            credentials = load_credentials()
        except (SettingError, OSError) as exc:
            self._metrics.credential_reloads.labels("failed").inc()
            log.error("credentials not reloaded (%s): %s; the previous ones stay in force", why, exc)
            self._seen = self._file_states()
            return False
        self.current = credentials
        self._seen = self._file_states()
        self._metrics.credential_reloads.labels("ok").inc()
        log.info("credentials reloaded (%s): %r", why, credentials)
        return True

    def check_files(self) -> None:
        if self._file_states() != self._seen:
            self.reload("a token file changed")

    async def watching(self, app: web.Application) -> Any:
        """cleanup_ctx: poll the token files, and reload on SIGHUP where the loop can take a signal handler."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")

        async def poll() -> None:
            while True:
                await asyncio.sleep(CREDENTIAL_CHECK_S)
                self.check_files()

        task = asyncio.create_task(poll(), name="edgerec-credentials")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)

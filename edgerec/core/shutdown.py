"""The graceful stop both services share: on SIGTERM `/readyz` answers 503 `draining` at once while the service keeps
answering for a drain window (a load balancer that honours readiness moves traffic away), then the server stops
accepting, finishes what is in flight and the service flushes what it holds, all within a stated time."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Annotated, Any, Callable, Self

from pydantic import model_validator

from .settings import ServiceSettings, bounded, setting

log = logging.getLogger("edgerec.shutdown")

DEFAULT_DRAIN_S = 5.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 25.0  # under Kubernetes' default terminationGracePeriodSeconds (30)
EXIT_MARGIN_S = 1.0  # kept back from the timeout for the process's own exit after the last flush

SignalHandler = Callable[[int, Any], Any]


class StopSettings(ServiceSettings):
    """The two stop settings every service takes (its own settings model adds them by inheriting these)."""

    drain: Annotated[float, bounded(0, 300, what="from 0 to 300 seconds")] = setting(
        DEFAULT_DRAIN_S,
        "EDGEREC_DRAIN_S",
        "after SIGTERM, seconds /readyz answers 503 draining while requests are still answered, so that load "
        "balancers move traffic away; then the server stops accepting; 0 = stop at once",
    )
    shutdown_timeout: Annotated[float, bounded(1, 3600, what="from 1 to 3600 seconds")] = setting(
        DEFAULT_SHUTDOWN_TIMEOUT_S,
        "EDGEREC_SHUTDOWN_TIMEOUT_S",
        "the process exits within this many seconds of SIGTERM, drain window included: requests in flight finish "
        "and what the service holds is flushed within it; must exceed the drain window by at least 1 s",
    )

    @model_validator(mode="after")
    def _drain_fits(self) -> Self:
        if self.shutdown_timeout < self.drain + EXIT_MARGIN_S:
            raise ValueError(
                f"--shutdown-timeout/EDGEREC_SHUTDOWN_TIMEOUT_S ({self.shutdown_timeout:g} s) must exceed "
                f"--drain/EDGEREC_DRAIN_S ({self.drain:g} s) by at least {EXIT_MARGIN_S:g} s"
            )
        return self


class Drain:
    """One service's stop, as the probes and the shutdown see it. `begin()` (on the event loop) starts the drain
    window: from then on `draining` is true and `readiness()` is the 503 body of `/readyz`; `window()` returns once
    the window is over (at once with `drain_s` 0, or on a second `begin()`), and `seconds_left()` is what remains of
    the shutdown timeout for finishing requests and flushing."""

    def __init__(self, drain_s: float = DEFAULT_DRAIN_S, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> None:
        self.drain_s = drain_s
        self.timeout_s = timeout_s
        self.started: float | None = None  # time.monotonic() of the SIGTERM
        self._over = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self.started is not None

    def begin(self) -> None:
        """The first call starts the window; a second one ends it now (an operator who asks twice)."""
        if self.started is not None:
            if not self._over.is_set():
                log.warning("second stop request: ending the drain window now")
                self._over.set()
            return
        self.started = time.monotonic()
        log.warning(
            "stop requested: /readyz answers 503 draining; answering for %g s more, then stopping within %g s",
            self.drain_s,
            self.timeout_s,
        )
        asyncio.get_running_loop().call_later(self.drain_s, self._over.set)

    async def window(self) -> None:
        """Until a stop was asked and its drain window is over."""
        await self._over.wait()

    def seconds_left(self) -> float:
        """Of the shutdown timeout, what is left for the rest of the stop (the whole budget before a stop)."""
        started = self.started if self.started is not None else time.monotonic()
        return max(0.0, started + self.timeout_s - EXIT_MARGIN_S - time.monotonic())

    def readiness(self) -> dict[str, Any]:
        """The body `/readyz` answers (with 503) while draining."""
        since = 0.0 if self.started is None else time.monotonic() - self.started
        return {
            "ready": False,
            "draining": True,
            "reason": "draining",
            "draining_for_s": round(since, 3),
            "drain_s": self.drain_s,
        }


def take_sigterm(drain: Drain) -> tuple[SignalHandler | None, Callable[[], None]]:
    """From inside the running event loop (in the main thread): SIGTERM starts `drain` instead of reaching the
    handler installed before (the server's, which would stop accepting at once). Returns that handler, for the
    caller to hand the stop to once `drain.window()` is over, and the function that puts it back. Outside the main
    thread signals cannot be taken: (None, a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return None, lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(drain.begin)

    signal.signal(signal.SIGTERM, on_sigterm)

    def give_back() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return (previous if callable(previous) else None), give_back


async def stop_after_window(drain: Drain, previous: SignalHandler | None, give_back: Callable[[], None]) -> None:
    """Once a stop was asked and its drain window is over, the stop the server's own handler would have made at
    once. A uvicorn Server (the handler's owner, with `should_exit`) is told to exit directly: through its handler it
    would record the signal and raise it again at its exit, ending the process by SIGTERM instead of status 0.
    Any other handler gets the signal itself."""
    await drain.window()
    server = getattr(previous, "__self__", None)
    if server is not None and hasattr(server, "should_exit"):
        server.should_exit = True
    else:
        give_back()
        signal.raise_signal(signal.SIGTERM)

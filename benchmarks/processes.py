"""Processes of a benchmark run: CPU pinning and CPU accounting (they start and stop as
edgerec.cli.process.Service)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import psutil


@dataclass(frozen=True)
class Placement:
    """Which cores run the servers and which run the load generators (and this harness)."""

    server_cores: tuple[int, ...] | None
    load_cores: tuple[int, ...] | None

    @classmethod
    def plan(cls, servers: int, pin: bool) -> "Placement":
        cores = sorted(os.sched_getaffinity(0))
        if not pin or len(cores) < 2:
            return cls(None, None)
        # Servers first (core 0 ..), the rest for load; at least one core for each side.
        n_server = min(max(servers, 1), len(cores) - 1)
        return cls(tuple(cores[:n_server]), tuple(cores[n_server:]))

    @property
    def pinned(self) -> bool:
        return self.server_cores is not None

    def server_core(self, index: int) -> tuple[int, ...] | None:
        """The core of server process `index` (one per core, round robin)."""
        if self.server_cores is None:
            return None
        return (self.server_cores[index % len(self.server_cores)],)

    def describe(self) -> dict:
        return {
            "pinned": self.pinned,
            "method": "sched_setaffinity inherited at fork (what `taskset -c` does)" if self.pinned else None,
            "server_cores": list(self.server_cores) if self.server_cores else None,
            "load_cores": list(self.load_cores) if self.load_cores else None,
        }


@contextlib.contextmanager
def cores(cpu_set: Sequence[int] | None) -> Iterator[None]:
    """Processes started inside inherit this CPU set (the calling thread's affinity is copied at fork)."""
    if not cpu_set:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpu_set))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the processes and all their live descendants."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    return total


class CpuSampler:
    """Samples the CPU time of named process groups in the background, so any time window can be priced."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self._groups: dict[str, list[int]] = {}
        self._samples: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def track(self, name: str, pids: Sequence[int]) -> None:
        with self._lock:
            self._groups[name] = list(pids)
            self._samples[name] = []
        self._sample_group(name)

    def untrack(self, name: str) -> None:
        with self._lock:
            self._groups.pop(name, None)

    def _sample_group(self, name: str) -> None:
        with self._lock:
            pids = self._groups.get(name)
        if pids is None:
            return
        value = tree_cpu_seconds(pids)
        with self._lock:
            if name in self._samples:
                self._samples[name].append((time.time(), value))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                names = list(self._groups)
            for name in names:
                self._sample_group(name)

    def percent(self, name: str, start: float, end: float) -> float | None:
        """CPU use of the group between two wall-clock times, in percent of one core."""
        with self._lock:
            samples = list(self._samples.get(name, ()))
        inside = [s for s in samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        # A group whose processes exit loses their time: take the highest reading as the end point.
        c1 = max(c for _, c in inside)
        return round(100.0 * (c1 - c0) / (t1 - t0), 1) if t1 > t0 else None

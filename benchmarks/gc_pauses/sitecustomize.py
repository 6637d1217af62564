"""Logs every garbage collection over 5 ms to stderr (a service's log), in every Python process started with this
directory on PYTHONPATH: `PYTHONPATH=benchmarks/gc_pauses python -m benchmarks.latency --profiles ...`."""

import gc
import sys
import time

_started = [0.0]


def _log_pause(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1000.0
    if ms > 5.0:
        sys.stderr.write(
            f"GCPAUSE gen{info['generation']} {ms:.1f} ms collected {info['collected']} at {time.time():.3f}\n"
        )


gc.callbacks.append(_log_pause)

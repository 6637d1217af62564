"""Handing the heap's free pages back to the system after a large rebuild (glibc's `malloc_trim`), where the C
library has it; elsewhere a no-op."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable

_trim: Callable[[int], int] | None = None
_looked_up = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        name = ctypes.util.find_library("c")
        try:
            _trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
        except OSError:
            _trim = None
    return _trim


def trim_heap() -> bool:
    """Return the free memory inside the C heaps to the system (pages freed by a rebuild that glibc would keep
    otherwise: about 14 MiB after an edge laid out 100,000 offers). Blocks other threads' mallocs while it runs:
    call it from a worker thread, after a rebuild, not per request. True when the C library has malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

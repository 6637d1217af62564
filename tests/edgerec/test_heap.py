"""trim_heap hands the pages the C heap keeps after a large free back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import os
import sys

import pytest

from edgerec.core.heap import trim_heap


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_the_pages_freed_under_a_live_allocation_go_back_to_the_system() -> None:
    # 100,000 blocks of 1 KiB (past pymalloc's 512 B, so in the C heap), then one kept above them: freeing the
    # blocks cannot shrink the heap's top, so their ~100 MB stay resident until trimmed.
    blocks = [os.urandom(1024) for _ in range(100_000)]
    kept = os.urandom(1024)
    del blocks
    before = _rss_bytes()
    assert trim_heap()
    assert _rss_bytes() < before - 50 * 2**20
    assert len(kept) == 1024

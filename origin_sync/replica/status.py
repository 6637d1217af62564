"""What the edge knows and reports about its sync (the syncer keeps it, /readyz and /metrics read it)."""

import collections
import time
from dataclasses import dataclass, field


@dataclass
class SyncStatus:
    """What the edge reports about its sync: how fresh its copy is, and what it refused."""

    version: int = 0
    origin_version: int = 0
    last_contact: float | None = None  # time.time() of the last verified answer from the origin (kept on disk)
    errors: int = 0
    last_error: str | None = None
    applied: int = 0
    snapshots: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)  # refused payloads by reason
    persist_failures: int = 0
    persisted_version: int | None = None
    loaded_from_disk: bool = False
    started_at: float = field(default_factory=time.time)
    poll_open: bool = False  # a long-poll is open to an origin that answered the previous request
    origin: str | None = None  # the origin URL the syncer talks to now (one of `origin_url`'s)
    failovers: int = 0  # moves to the next origin after one failed or answered something refused
    profile_changes: int = 0  # profile summaries and erasures handed to `on_profiles`

    def staleness_s(self) -> float | None:
        """Seconds since the origin was last known to be there: 0 while a long-poll is open to an origin that
        answered the request before (so a quiet catalogue is not stale), else since the last verified answer."""
        if self.poll_open:
            return 0.0
        return None if self.last_contact is None else max(0.0, time.time() - self.last_contact)

    def versions_behind(self) -> int:
        return max(0, self.origin_version - self.version)

"""The edge's side of sync: its replica of the origin's data, verified, its copy on disk, and the syncer that keeps
it current."""

from .local import LocalCopy
from .state import Replica, apply_deltas, check_state_digest, replica_from_snapshot
from .status import SyncStatus
from .syncer import Syncer

__all__ = [
    "LocalCopy",
    "Replica",
    "SyncStatus",
    "Syncer",
    "apply_deltas",
    "check_state_digest",
    "replica_from_snapshot",
]

"""The edge's shopper profiles, keyed by pseudonym: the embedded store (memory + encrypted SQLite on local disk),
the Redis store for a region whose replicas share profiles, the profile codec and the store's metrics.
`RedisProfileStore` is imported from `edge_node.profiles.redis_store` (redis-py is the `profiles-redis` extra)."""

from .codec import Profile, ProfileCodec
from .disk import StoreLocked
from .embedded import EmbeddedProfileStore
from .interface import CorruptRecord, ProfileEvent, ProfileStore, StoreStats
from .metrics import ProfileCollector, register_profile_metrics

__all__ = [
    "CorruptRecord",
    "EmbeddedProfileStore",
    "Profile",
    "ProfileCodec",
    "ProfileCollector",
    "ProfileEvent",
    "ProfileStore",
    "StoreLocked",
    "StoreStats",
    "register_profile_metrics",
]

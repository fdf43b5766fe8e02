"""Change sources: each yields ``Change``s in source order and persists what has been durably staged.

One package per source: ``dms`` (AWS DMS files on S3), ``postgres`` (logical replication), ``sqlserver``
(CDC change tables). They are not imported here: each pulls its own driver and is picked by the
composition root (``replicator.app``).

Exports the contracts (``base``): ``Source``, and the optional capabilities ``Resyncable``, ``Stoppable``,
``Drainable``, ``Streaming`` (a read waits for news itself), ``Notifying`` (news between reads); and
(``sharded``) how tables split into shards that different tasks own, ``ShardedSource`` reading several.
"""

from replicator.sources.base import Drainable, Notifying, Resyncable, Source, Stoppable, Streaming
from replicator.sources.sharded import ShardedSource, shard_of, table_groups

__all__ = [
    "Drainable",
    "Notifying",
    "Resyncable",
    "ShardedSource",
    "Source",
    "Stoppable",
    "Streaming",
    "shard_of",
    "table_groups",
]

"""Change sources: each yields ``Change``s in source order and persists what has been durably staged.

One package per source: ``dms`` (AWS DMS files on S3), ``postgres`` (logical replication), ``sqlserver``
(CDC change tables). They are not imported here: each pulls its own driver and is picked by the
composition root (``replicator.app``).

Exports the contracts (``base``): ``Source``, and the optional capabilities ``Resyncable``, ``Stoppable``,
``Drainable``.
"""

from replicator.sources.base import Drainable, Resyncable, Source, Stoppable

__all__ = ["Drainable", "Resyncable", "Source", "Stoppable"]

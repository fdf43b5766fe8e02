"""Views: SQL views over the replicated tables, kept fresh in the warehouse.

- ``graph``: a view's definition (``<schemas>/views/*.sql``, with its refresh policy) and the dependency
  order of all of them;
- ``refresh``: the scheduling (after merges of the tables a view reads, or on a cron) and the strategies:
  full rebuild, or incremental maintenance inside the merge (``ivm``, ``ivm_hook``);
- ``sql``, ``redshift``: the per-warehouse SQL of a full rebuild, and what Redshift refuses.

Exports: ``load_views``, ``parse_view``, ``order_views``, ``ViewDef``, ``ViewCatalog``, ``ViewError``;
``ViewRefresher``, ``ViewStatus``, ``read_status``; ``FULL_VIEW_SQL`` (the full-rebuild SQL per warehouse).
"""

from replicator.views.graph import ViewCatalog, ViewDef, ViewError, load_views, order_views, parse_view
from replicator.views.refresh import ViewRefresher, ViewStatus, read_status
from replicator.views.sql import FULL_VIEW_SQL

__all__ = [
    "FULL_VIEW_SQL",
    "ViewCatalog",
    "ViewDef",
    "ViewError",
    "ViewRefresher",
    "ViewStatus",
    "load_views",
    "order_views",
    "parse_view",
    "read_status",
]

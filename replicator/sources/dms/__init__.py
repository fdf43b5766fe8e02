"""The AWS DMS source: full-load and CDC files (CSV or Parquet) that DMS writes to S3 or a local folder,
read per table in file-name order (or in commit order across tables with PreserveTransactions).

Exports: ``DmsSource`` and ``DmsOptions`` (the DMS endpoint settings that shape the files).
``print_section`` (``replicator dms-settings``: an endpoint's settings as TOML).
``open_source`` (``wiring``) opens it from ``[source.dms]``, for the composition root.
"""

from replicator.sources.dms.layout import DmsOptions
from replicator.sources.dms.settings import print_section
from replicator.sources.dms.source import DmsSource
from replicator.sources.dms.wiring import open_source

__all__ = ["DmsOptions", "DmsSource", "open_source", "print_section"]

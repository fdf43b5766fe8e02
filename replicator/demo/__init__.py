"""The embedded demo: a synthetic orthodontic practice's tables, written as DMS CDC files into a local
folder (``domain``: the tables and how rows change; ``feed``: the files; ``run``: the command).

Exports: ``demo`` (the ``replicator demo`` command, in ``run``); ``generate`` (a full load and CDC files),
``generate_more`` (more CDC files), ``FeedFormat``, ``GenerationSummary``, the ``feed`` module, and from
``domain`` ``COLUMNS`` and ``TRICKY_NOTE``.
"""

from replicator.demo import feed
from replicator.demo.domain import COLUMNS, TRICKY_NOTE
from replicator.demo.feed import FeedFormat, GenerationSummary, generate, generate_more
from replicator.demo.run import demo

__all__ = [
    "COLUMNS",
    "TRICKY_NOTE",
    "FeedFormat",
    "GenerationSummary",
    "demo",
    "feed",
    "generate",
    "generate_more",
]

"""Values: the logical column types (``varchar(20)``, ``numeric(10,2)``, ``int[]``, ...) and how source text
and temporal values become Arrow arrays. Imports nothing of the package but ``model``'s users depend on it.

Exports: ``LogicalType`` and ``parse_type``; the kind sets ``KINDS``, ``SCALAR_KINDS``, ``TEXT_KINDS``;
``text_to_arrow`` and ``cast_text`` (text to a typed Arrow array); ``widening`` (whether values of one
type fit a column of another, or widen it); ``temporal`` (dates, times, intervals).
"""

from replicator.values import temporal
from replicator.values.types import (
    KINDS,
    SCALAR_KINDS,
    TEXT_KINDS,
    LogicalType,
    cast_text,
    parse_type,
    text_to_arrow,
    widening,
)

__all__ = [
    "KINDS",
    "SCALAR_KINDS",
    "TEXT_KINDS",
    "LogicalType",
    "cast_text",
    "parse_type",
    "temporal",
    "text_to_arrow",
    "widening",
]

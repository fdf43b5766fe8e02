"""Warehouses: the targets staged batches are merged into, exactly once and in order.

- ``base``: the ``Warehouse`` protocol the pipeline drives, and ``STATE_SCHEMA`` (``_replicator``), where
  the replicator keeps its own tables in the warehouse;
- ``dialect``, ``ledger``, ``sql_base``, ``evolution``: what every SQL warehouse shares: the SQL builders
  (a ``Dialect`` is data: a type map and capability flags), the ledger of applied batches, the apply
  algorithm (``SqlWarehouse``), and the target tables' schema evolution;
- ``duckdb``, ``postgres``, ``redshift``: one module per warehouse, its dialect and its connection side.

Exports: ``Warehouse``, ``ApplyResult``, ``TableState``, ``STATE_SCHEMA``; ``Dialect``, ``LEDGER``,
``PROGRESS``; ``SqlWarehouse``, ``MergeContext``, ``MergeHook``, ``RoundFailed``, ``inspect_batch``,
``read_table_states``;
``IncompatibleSchemaChange`` and the ``evolution`` module; and the concrete warehouses, ``DuckDBWarehouse``,
``PostgresWarehouse``, ``RedshiftWarehouse`` (with ``RedshiftAuth``, ``RetryPolicy``, ``connect_kwargs``)
and their dialects ``DUCKDB``, ``POSTGRES``, ``REDSHIFT``; ``postgres_dsn``. The concrete ones load on
first use (``__getattr__`` below): ``duckdb`` and ``postgres`` import their drivers, and a process needs one
warehouse. Each has ``open_warehouse(cfg, *, read_only)``, which the composition root calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from replicator.warehouses import evolution
from replicator.warehouses.base import STATE_SCHEMA, ApplyResult, TableState, Warehouse
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.evolution import IncompatibleSchemaChange
from replicator.warehouses.ledger import LEDGER, PROGRESS
from replicator.warehouses.sql_base import (
    MergeContext,
    MergeHook,
    RoundFailed,
    SqlWarehouse,
    inspect_batch,
    read_table_states,
)

if TYPE_CHECKING:
    from replicator.warehouses.duckdb import DUCKDB, DuckDBWarehouse
    from replicator.warehouses.postgres import POSTGRES, PostgresWarehouse, postgres_dsn
    from replicator.warehouses.redshift import (
        REDSHIFT,
        RedshiftAuth,
        RedshiftWarehouse,
        RetryPolicy,
        connect_kwargs,
    )

_LAZY = {
    "DUCKDB": "duckdb",
    "DuckDBWarehouse": "duckdb",
    "POSTGRES": "postgres",
    "PostgresWarehouse": "postgres",
    "postgres_dsn": "postgres",
    "REDSHIFT": "redshift",
    "RedshiftAuth": "redshift",
    "RedshiftWarehouse": "redshift",
    "RetryPolicy": "redshift",
    "connect_kwargs": "redshift",
}


def __getattr__(name: str) -> Any:
    """A concrete warehouse's names, importing its module (and its driver) the first time one is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DUCKDB",
    "LEDGER",
    "POSTGRES",
    "PROGRESS",
    "REDSHIFT",
    "STATE_SCHEMA",
    "ApplyResult",
    "Dialect",
    "DuckDBWarehouse",
    "IncompatibleSchemaChange",
    "MergeContext",
    "MergeHook",
    "PostgresWarehouse",
    "RedshiftAuth",
    "RedshiftWarehouse",
    "RetryPolicy",
    "RoundFailed",
    "SqlWarehouse",
    "TableState",
    "Warehouse",
    "connect_kwargs",
    "evolution",
    "inspect_batch",
    "postgres_dsn",
    "read_table_states",
]

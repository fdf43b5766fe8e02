"""Column policies for sensitive data, applied to a batch before it is staged.

Per column (``[policies]`` in the table's TOML): ``drop`` (the column is not staged and not replicated),
``null`` (staged and replicated as NULL), or ``hash`` (staged and replicated as the lowercase hex
HMAC-SHA256 of the value's wire text under a secret key: equal values stay joinable, the clear value
cannot be recovered without the key). The policy runs inside the stage, before Arrow and Parquet, so the
raw value never reaches the staging store (S3) or the warehouse.

The target's shape follows from the same function (``target_schema``): a dropped column does not exist
there, a hashed column is ``varchar(64)``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from replicator.model import Batch, Change, Column, TableSchema
from replicator.values import LogicalType

Policy = Literal["drop", "null", "hash"]
POLICIES: tuple[Policy, ...] = ("drop", "null", "hash")
HASH_TYPE = LogicalType("varchar", length=64)


class PolicyError(ValueError):
    """A policy that cannot be applied as configured (unknown column, dropped key, no key for hash)."""


@dataclass(frozen=True, slots=True)
class ColumnPolicies:
    """The policies of one table's columns and the HMAC key (bytes; never logged, never in a repr)."""

    rules: Mapping[str, str]  # column -> one of POLICIES
    key: bytes | None = None

    def __repr__(self) -> str:
        return f"ColumnPolicies(rules={dict(self.rules)!r}, key={'***' if self.key else None})"

    def check(self, schema: TableSchema) -> None:
        """Refuse rules the schema cannot take; called at start-up so a mistake stops nothing later."""
        for name, rule in self.rules.items():
            if rule not in POLICIES:
                raise PolicyError(f"{schema.table}: policy {rule!r} of {name} is not one of {POLICIES}")
            if name in schema.primary_key and rule != "hash":
                raise PolicyError(f"{schema.table}: key column {name} can only be hashed, not {rule}")
        if "hash" in self.rules.values() and not self.key:
            raise PolicyError(
                f"{schema.table}: a column is hashed but no key is configured"
                " (policies.hmac_key_file or REPLICATOR__POLICIES__HMAC_KEY)"
            )

    def hash(self, text: str) -> str:
        assert self.key is not None
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def target_schema(schema: TableSchema, policies: ColumnPolicies | None) -> TableSchema:
    """The shape the staged batch (and so the target) has once the policies are applied."""
    if policies is None or not policies.rules:
        return schema
    columns = []
    for c in schema.columns:
        rule = policies.rules.get(c.name)
        if rule == "drop":
            continue
        columns.append(Column(c.name, HASH_TYPE, c.nullable) if rule == "hash" else c)
    return TableSchema(schema.table, tuple(columns), schema.primary_key)


def apply(batch: Batch, policies: ColumnPolicies | None) -> Batch:
    """``batch`` with every column policy applied to every change (old and new images alike)."""
    if policies is None or not any(c in policies.rules for c in batch.schema.column_names):
        return batch
    rules = [policies.rules.get(c) for c in batch.schema.column_names]
    kept = [i for i, r in enumerate(rules) if r != "drop"]
    dropped = {n for n, r in zip(batch.schema.column_names, rules, strict=True) if r == "drop"}

    def value(rule: str | None, v: str | None) -> str | None:
        if v is None or rule is None:
            return v
        return None if rule == "null" else policies.hash(v)

    changes = [
        Change(
            c.table,
            c.op,
            tuple(value(rules[i], c.values[i]) for i in kept) if c.values else c.values,
            c.position,
            c.commit_time,
            c.unchanged - dropped,
            None if c.prior is None else tuple(value(rules[i], c.prior[i]) for i in kept),
        )
        for c in batch.changes
    ]
    return Batch(batch.table, target_schema(batch.schema, policies), changes)

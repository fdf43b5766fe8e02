"""Test helper: what a source yielded, with each ``ChangeChunk`` as the changes it stands for."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from replicator.model import ChangeChunk


def expand(items: Iterable[Any]) -> list[Any]:
    """``items`` in order, each ``ChangeChunk`` replaced by its ``Change``s."""
    out: list[Any] = []
    for item in items:
        out.extend(item.changes() if isinstance(item, ChangeChunk) else [item])
    return out

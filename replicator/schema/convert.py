"""Two steps of staging that work on whole batches: resolving unsent values, and typing text columns.

``resolve_unchanged``: a change may leave columns out (PostgreSQL's unchanged TOAST values, a DMS LOB not
sent). Their value is the row's previous one: from an earlier change of the same row in the batch when
there is one (filled here), else from the target's row (filled by the merge). A primary-key change moves
the row: the previous values then belong to the *old* key, so the staged row names the row of the batch
whose key finds them in the target (``FROM_SEQ_COLUMN``). A chain of key changes (a -> b -> c) in one batch
points back to the first key, which is the one the target holds.

``typed_column``: wire text -> typed Arrow, a whole column at once. A value that does not parse must be
set aside alone, and a batch where half of the rows are bad must cost at most twice a clean one, so bad
values are found in bulk. A cast that fails costs Arrow work per bad value, so a long column is cast whole
only if a sample of it casts. Otherwise: the sample's texts of the wrong shape (a wrong null marker) are
found in the column by equality; if more remain, a vectorised check of every value's shape sets them
aside; what still does not cast is bisected with bulk casts (a clean half costs one cast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import pyarrow as pa
import pyarrow.compute as pc

from replicator.model import Change, Op, TableSchema
from replicator.values import LogicalType, cast_text, temporal

# -- unsent values and key changes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    values: tuple[str | None, ...]
    unknown: frozenset[str]  # columns whose value is still not known (the target's row has it)
    origin: int | None  # staged row whose key finds that target row; None: this row's own key


def resolve_unchanged(
    schema: TableSchema, changes: Sequence[Change]
) -> tuple[list[Change], list[int | None], list[int]]:
    """The rows to stage for ``changes``: (rows, origin, source).

    A key change (``Change.prior``) becomes two rows: a delete of the prior key, then the upsert of the new
    key. ``origin[i]`` is the index of the row whose key names the target row that supplies row ``i``'s
    still-unchanged columns (None: row ``i``'s own key, the merge's usual rule). ``source[i]`` is the index
    in ``changes`` that row ``i`` comes from. Unchanged values an earlier row of the same key in the batch
    knows are filled in (and leave ``Change.unchanged``).
    """
    names = schema.column_names
    key_idx = [names.index(k) for k in schema.primary_key]
    all_unknown = frozenset(n for n in names if n not in schema.primary_key)
    latest: dict[tuple[str | None, ...], _Row] = {}
    rows: list[Change] = []
    origin: list[int | None] = []
    source: list[int] = []
    for index, c in enumerate(changes):
        key = tuple(c.values[i] for i in key_idx) if c.values else ()
        if c.op is Op.DELETE or c.op is Op.TRUNCATE:
            if c.op is Op.TRUNCATE:
                latest.clear()
            else:
                latest.pop(key, None)
            rows.append(c)
            origin.append(None)
            source.append(index)
            continue
        if c.prior is not None:
            old_key = tuple(c.prior[i] for i in key_idx)
            prev = latest.pop(old_key, None)
            moved = len(rows)
            rows.append(Change(c.table, Op.DELETE, c.prior, c.position, c.commit_time))
            origin.append(None)
            source.append(index)
            if prev is None:  # untouched in this batch: everything not sent is in the target's old row
                prev = _Row(c.prior, all_unknown, moved)
            elif prev.origin is None:
                prev = _Row(prev.values, prev.unknown, moved)
        else:
            prev = latest.get(key)
        values, unknown, at = c.values, c.unchanged, None
        if unknown and prev is not None:
            values = tuple(
                prev.values[i] if n in unknown and n not in prev.unknown else v
                for i, (n, v) in enumerate(zip(names, c.values, strict=True))
            )
            unknown = unknown & prev.unknown
            at = prev.origin if unknown else None
        latest[key] = _Row(values, unknown, at)
        if values is not c.values or unknown != c.unchanged or c.prior is not None:
            rows.append(Change(c.table, c.op, values, c.position, c.commit_time, unknown))
        else:
            rows.append(c)
        origin.append(at)
        source.append(index)
    _unfill_superseded(rows, origin, source, changes, key_idx)
    return rows, origin, source


def _unfill_superseded(
    rows: list[Change],
    origin: list[int | None],
    source: list[int],
    changes: Sequence[Change],
    key_idx: list[int],
) -> None:
    """Only the last row of each key reaches the target (the merge keeps the last change per key): earlier
    rows go back to what they were sent, so a large unchanged value is staged once, not once per change of
    its row (a value filled into 50 updates of one key made 50 copies of it in the batch)."""
    last: dict[tuple[str | None, ...], int] = {}
    for i, r in enumerate(rows):
        last[tuple(r.values[k] for k in key_idx)] = i
    for i, r in enumerate(rows):
        if r.op is Op.DELETE or r.op is Op.TRUNCATE or last[tuple(r.values[k] for k in key_idx)] == i:
            continue
        c = changes[source[i]]
        if r is not c:  # filled or re-keyed here: stage what was sent
            rows[i] = Change(c.table, c.op, c.values, c.position, c.commit_time, c.unchanged)
            origin[i] = None


# -- text -> typed columns --------------------------------------------------------------------------------

_INT = r"^\s*[+-]?\d+\s*$"
_FLOAT = r"(?i)^\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)\s*$"
_DECIMAL = r"(?i)^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$"
# Dates and times: PostgreSQL's infinities, BC years, 24:00:00 and offsets to the second are valid too.
_DATE, _TIME, _TIMESTAMP = temporal.DATE_SHAPE, temporal.TIME_SHAPE, temporal.TIMESTAMP_SHAPE
_BOOLEAN = r"(?i)^\s*(t|true|1|y|yes|on|f|false|0|n|no|off)\s*$"
# A value must have this form to be worth a cast; a value without it is bad for sure. Kinds not listed are
# bisected only (their bad values are rare: they are mostly text).
_SHAPES = {
    "smallint": _INT, "integer": _INT, "bigint": _INT, "real": _FLOAT, "double": _FLOAT,
    "numeric": _DECIMAL, "date": _DATE, "timestamp": _TIMESTAMP, "timestamptz": _TIMESTAMP,
    "time": _TIME, "boolean": _BOOLEAN,
}  # fmt: skip
_SMALL = 16  # parts this small are cast value by value
_SAMPLE_RUNS, _SAMPLE_RUN = 16, 64  # a long column's sample (``_sample``): 16 runs of 64 values
_MARKERS = 8  # at most this many distinct bad texts in a sample are looked for by equality


def _row_numbers(n: int) -> pa.Array:
    """0..n-1 as int64, built by Arrow (``pa.array(range(n))`` costs ~10 ms per 100k rows in Python)."""
    return pc.indices_nonzero(pc.fill_null(pa.nulls(n, pa.bool_()), True)).cast(pa.int64())


@overload
def typed_column(
    text: pa.Array, t: LogicalType, *, suspect: bool = ..., as_mask: Literal[False] = ...
) -> tuple[pa.Array, list[int]]: ...
@overload
def typed_column(
    text: pa.Array, t: LogicalType, *, suspect: bool = ..., as_mask: Literal[True]
) -> tuple[pa.Array, pa.BooleanArray | None]: ...
def typed_column(
    text: pa.Array, t: LogicalType, *, suspect: bool = False, as_mask: bool = False
) -> tuple[pa.Array, list[int] | pa.BooleanArray | None]:
    """``text`` (strings) as type ``t``, and the rows whose value does not parse (null in the result):
    their indexes, or with ``as_mask`` a boolean mask of them (None when there are none: nothing built
    per row, for callers that keep working column-wise).

    A clean column costs one cast. ``suspect`` (the column had bad values in the table's last batch): the
    values' shapes are checked first, so a column that is bad again does not pay a failing cast first."""
    typed, bad = _typed(text, t, suspect)
    if as_mask:
        return typed, bad
    return typed, [] if bad is None else pc.indices_nonzero(bad).to_pylist()


def _typed(text: pa.Array, t: LogicalType, suspect: bool) -> tuple[pa.Array, pa.BooleanArray | None]:
    shape = _SHAPES.get(t.kind)
    if shape is not None and t.kind == "numeric" and t.precision is None:
        shape = None
    sample = _sample(text) if shape is not None else None
    if shape is None or not (suspect or (sample is not None and _fails(sample, t))):
        try:
            return cast_text(text, t), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            pass
    n = len(text)
    misfit: pa.BooleanArray | None = None
    if shape is not None:
        if sample is not None:
            # Most bad values are one or two repeated texts (a wrong null marker): the sample's values of
            # the wrong shape, found in the column by equality, are bad for sure; with them blanked, one
            # cast usually types all the rest.
            wrong = sample.filter(
                pc.invert(pc.fill_null(pc.match_substring_regex(sample, pattern=shape), True))
            )
            markers = pc.unique(wrong)
            if 0 < len(markers) <= _MARKERS and 2 * len(markers) <= len(wrong) + 1:
                misfit = pc.fill_null(pc.is_in(text, value_set=markers), False)
                try:
                    return cast_text(pc.if_else(misfit, pa.scalar(None, pa.string()), text), t), misfit
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                    pass  # bad values besides them: check every value's shape
        # Every value of the wrong shape is bad for sure: one vectorised match finds them all, and with
        # them blanked one cast usually types all the rest.
        misfit = pc.invert(pc.fill_null(pc.match_substring_regex(text, pattern=shape), True))
        blanked = pc.if_else(misfit, pa.scalar(None, pa.string()), text) if pc.any(misfit).as_py() else text
        try:
            return cast_text(blanked, t), misfit if blanked is not text else None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            candidates = pc.indices_nonzero(pc.invert(misfit)).cast(pa.int64())
    else:
        candidates = _row_numbers(n)
    # Values of the right shape that still do not cast (2024-02-30, a number beyond the precision): rare,
    # found by bisecting with bulk casts.
    parts: list[tuple[pa.Array, pa.Array]] = []  # (row indexes, typed values)
    bad: list[int] = []
    _bisect(text, candidates, t, parts, bad)
    rows = _row_numbers(n)
    typed = pa.nulls(n, t.arrow)
    if parts:
        indexes = pa.concat_arrays([pc.cast(p[0], pa.int64()) for p in parts])
        values = pa.concat_arrays([p[1] for p in parts])
        # Scatter back into row order: sort the converted parts by row index, nulls for the bad rows.
        order = pc.sort_indices(indexes)
        indexes, values = indexes.take(order), values.take(order)
        present = pc.is_in(rows, value_set=indexes)
        slot = pc.subtract(pc.cumulative_sum(pc.cast(present, pa.int64())), 1)
        typed = pc.if_else(present, values.take(pc.max_element_wise(slot, 0)), typed)
    mask = pc.is_in(rows, value_set=pa.array(bad, pa.int64()))
    if misfit is not None:
        mask = pc.or_(mask, misfit)
    return typed, mask if pc.any(mask).as_py() else None


def _sample(text: pa.Array) -> pa.Array | None:
    """Runs of values spread over a long column (None for a short one: it is checked whole)."""
    n = len(text)
    if n <= 4 * _SAMPLE_RUNS * _SAMPLE_RUN:
        return None
    return pa.concat_arrays([text.slice(i * n // _SAMPLE_RUNS, _SAMPLE_RUN) for i in range(_SAMPLE_RUNS)])


def _fails(sample: pa.Array, t: LogicalType) -> bool:
    """Some value of ``sample`` does not parse. A cast that fails costs Arrow work per bad value (half a
    column of them: ~30 times a clean cast), so a column whose sample fails is checked by shape first; a
    clean one pays a cast of ~1,000 values more."""
    try:
        cast_text(sample, t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return True
    return False


def _bisect(
    text: pa.Array, rows: pa.Array, t: LogicalType, parts: list[tuple[pa.Array, pa.Array]], bad: list[int]
) -> None:
    """Cast ``text[rows]``; where that fails, halves (value by value below ``_SMALL``) until each bad row
    is alone. A part that casts costs one bulk cast, so few bad rows cost about two casts of the column."""
    stack = [rows]
    while stack:
        part = stack.pop()
        if len(part) == 0:
            continue
        try:
            parts.append((part, cast_text(text.take(part), t)))
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            pass
        if len(part) <= _SMALL:
            for i in part.to_pylist():
                one = pa.array([i], pa.int64())
                try:
                    parts.append((one, cast_text(text.take(one), t)))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                    bad.append(i)
            continue
        half = len(part) // 2
        stack += [part.slice(half), part.slice(0, half)]


def null_key_mask(key_columns: Sequence[pa.Array]) -> pa.Array:
    """Per row: some primary-key column is null (such a row can never be merged)."""
    mask = pc.is_null(key_columns[0])
    for col in key_columns[1:]:
        mask = pc.or_(mask, pc.is_null(col))
    return mask

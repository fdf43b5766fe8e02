"""``typed_column`` finds the same bad rows and values whether or not a column is ``suspect`` (checked by
shape first because it had bad values in the table's last batch), including values of the right shape that
still do not cast."""

from __future__ import annotations

import pyarrow as pa
import pytest

from replicator.schema import typed_column
from replicator.values import parse_type

CASES = {
    "date": ["2024-05-01", "NULL", None, "2024-02-30", "infinity", "x", "2024-05-02"],
    "timestamp": ["2024-05-01 12:00:00", "NULL", "2024-05-01 25:00:00", None, "2024-05-01 12:00:00.123456"],
    "bigint": ["1", "NULL", "99999999999999999999", "-3", None, " 7 "],
    "numeric(5,2)": ["1.25", "NULL", "12345.5", "-0.5", None],
    "boolean": ["t", "NULL", "yes", None, "0"],
    "text": ["a", "NULL", None],
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_suspect_column_gives_what_a_plain_one_gives(kind: str) -> None:
    t = parse_type(kind)
    values = pa.array(CASES[kind] * 7, pa.string())  # more than the value-by-value threshold
    plain, plain_bad = typed_column(values, t)
    suspect, suspect_bad = typed_column(values, t, suspect=True)
    assert suspect_bad == plain_bad
    assert suspect.equals(plain)
    if kind != "text":
        assert plain_bad, "each case holds bad values"

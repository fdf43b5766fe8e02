"""Timestamp text is cast as it is first, normalised only when that fails (``temporal.parse_timestamp``).

The shortcut must never change a value: wherever Arrow's plain cast accepts a text, the normalised text
(7+ fractional digits cut to 6, "+05" offsets widened to "+05:00", "Z" as "+00:00") casts to the same
instant. Generated texts mix every form the sources write, valid and not.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.values import temporal

_digits = st.integers(0, 9).map(str)


@st.composite
def timestamp_texts(draw: st.DrawFn) -> str:
    year = draw(st.integers(1, 9999))
    text = f"{year:04d}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}"
    if draw(st.booleans()):
        text += draw(st.sampled_from([" ", "T"]))
        text += f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
        if draw(st.booleans()):
            text += f":{draw(st.integers(0, 59)):02d}"
            if draw(st.booleans()):
                text += "." + "".join(draw(st.lists(_digits, min_size=1, max_size=9)))
    text += draw(st.sampled_from(["", "", "Z", " Z", "+00", "-03", "+05:30", "+0530", "-11:00", " +05"]))
    return text


def _reference(texts: list[str | None], zoned: bool) -> list[object]:
    """Each text alone, through the normalising path only (None where it does not cast)."""
    target = pa.timestamp("us", tz="UTC" if zoned else None)
    out: list[object] = []
    for t in texts:
        try:
            text = temporal.normalised_timestamps(pa.array([t], pa.string()), zoned=zoned)
            out.append(pc.cast(text, target)[0])
        except pa.ArrowInvalid:
            out.append("bad")
    return out


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), timestamp_texts()), min_size=1, max_size=20), zoned=st.booleans())
def test_the_plain_cast_and_the_normalised_text_agree(texts: list[str | None], zoned: bool) -> None:
    expected = _reference(texts, zoned)
    if "bad" in expected:  # the column has a bad value: the whole column is refused either way
        with pytest.raises((pa.ArrowInvalid, ValueError)):
            temporal.parse_timestamp(pa.array(texts, pa.string()), zoned=zoned)
        return
    got = temporal.parse_timestamp(pa.array(texts, pa.string()), zoned=zoned)
    assert got.to_pylist() == [e.as_py() for e in expected]  # type: ignore[attr-defined]


def test_texts_the_plain_cast_refuses_still_parse() -> None:
    # The forms the regular expressions exist for: none of them casts as it is.
    texts = ["2026-11-01 10:00:00.1234567Z", "2026-11-01 10:00:00 Z", "2026-11-01 10:00:00.12345678+05:30"]
    for t in texts:
        with pytest.raises(pa.ArrowInvalid):
            pc.cast(pa.array([t]), pa.timestamp("us", tz="UTC"))
    got = temporal.parse_timestamp(pa.array(texts), zoned=True).to_pylist()
    assert [str(v) for v in got] == [
        "2026-11-01 10:00:00.123456+00:00",
        "2026-11-01 10:00:00+00:00",
        "2026-11-01 04:30:00.123456+00:00",
    ]

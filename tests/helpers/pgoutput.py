"""An independent reading of pgoutput's TupleData, for checking the decoders and row scanners against."""

from __future__ import annotations

import struct


def raw_values(data: bytes, pos: int) -> list[bytes | None] | None:
    """The TupleData at ``pos`` as each value's bytes (None for NULL), or None when a value is neither text
    nor NULL (unchanged TOAST, binary). Written with ``struct``, apart from the code it checks."""
    (count,) = struct.unpack_from(">H", data, pos)
    pos += 2
    out: list[bytes | None] = []
    for _ in range(count):
        kind = data[pos : pos + 1]
        if kind == b"n":
            out.append(None)
            pos += 1
        elif kind == b"t":
            (length,) = struct.unpack_from(">i", data, pos + 1)
            out.append(data[pos + 5 : pos + 5 + length])
            pos += 5 + length
        else:
            return None
    return out

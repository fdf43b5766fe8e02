"""Issue 17, point 5: the quarantine never holds a policy column in clear.

Rows rejected while a DMS file is parsed (bad Op, field count, invalid UTF-8, CSV syntax, bad timestamp)
were stored raw, before the column policies run. On a table with column policies the quarantine now keeps
where the row is (the source object and row number: the object is already in the customer's bucket) and
why, never its bytes; values that fail to parse later are stored after the policies, as before. Every object
under staging is scanned for the clear values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers.daemon import Feed, daemon_config
from tests.helpers.support import ROOT, run_cli

EMAIL, PHONE, LAST = "phi.leak@mail.example", "(555) 123-4567", "Leakmore"
TS = "2024-03-05 10:00:00.000000"


def _row(
    op: str, pid: int, *, ts: str = TS, first: str = "Ann", last: str = LAST, dob: str = "1990-01-01"
) -> str:
    return f"{op},{ts},{pid},1,{first},{last},{dob},{EMAIL},{PHONE},NULL,1,NULL,{TS},{TS}"


BAD_ROWS = {
    "column_count": f"I,{TS},901,1,Ann,{LAST},1990-01-01,{EMAIL},{PHONE},NULL,1",
    "unknown_op": _row("X", 902),
    "invalid_utf8": _row("I", 903, first="\udcff\udcfe"),
    "csv_syntax": _row("I", 904, last=f'"{LAST}"x'),
    "bad_timestamp": _row("I", 905, ts="not-a-time"),
    "bad_value": _row("I", 906, dob="1990-13-45"),  # parses as CSV; the date fails when staged
}


def test_no_bad_row_of_a_policy_table_reaches_the_quarantine_in_clear(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    patients = schemas / "tables" / "patients.toml"
    policies = '\n[policies]\nlast_name = "hash"\nemail = "drop"\nphone = "null"\n'
    patients.write_text(patients.read_text() + policies)
    feed = Feed(tmp_path, seed=50, flushes=1)
    feed.release(1)
    text = "\n".join(BAD_ROWS.values()) + "\n" + _row("I", 907) + "\n"
    (feed.live / "dbo" / "patients" / "20240305-1000000000.csv").write_bytes(
        text.encode("utf-8", "surrogateescape")
    )
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    cfg.write_text(
        cfg.read_text()
        .replace(f'schemas = "{ROOT / "schemas"}"', f'schemas = "{schemas}"')
        .replace("[source.dms]\n", '[source.dms]\nbad_input_policy = "quarantine"\n')
    )
    out = run_cli("run", "--once", "-c", str(cfg), env={"REPLICATOR__POLICIES__HMAC_KEY": "k" * 32})
    assert out.returncode == 0, out.stderr[-3000:]

    quarantine = tmp_path / "stage" / "_quarantine" / "dbo.patients"
    notes = [json.loads(p.read_text()) for p in quarantine.glob("*.json")]
    reasons = {n["reason"] for n in notes}
    assert set(BAD_ROWS) - {"bad_value"} <= reasons, reasons
    for n in notes:
        if n["reason"] in BAD_ROWS and n["reason"] != "bad_value":
            assert n["data_key"] is None and n["row"] in range(1, 7), n
            assert n["source"].endswith("dbo/patients/20240305-1000000000.csv"), n
            assert "not kept" in n["detail"], n
    everything = b"".join(p.read_bytes() for p in (tmp_path / "stage").rglob("*") if p.is_file())
    for clear in (EMAIL, PHONE, LAST):
        assert clear.encode() not in everything, f"{clear!r} is in clear under staging"
    assert EMAIL not in out.stderr and PHONE not in out.stderr


def test_a_table_without_policies_keeps_its_bad_rows_for_the_operator(tmp_path: Path) -> None:
    feed = Feed(tmp_path, seed=51, flushes=1)
    feed.release(1)
    (feed.live / "dbo" / "patients" / "20240305-1000000000.csv").write_text(BAD_ROWS["unknown_op"] + "\n")
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    cfg.write_text(
        cfg.read_text().replace("[source.dms]\n", '[source.dms]\nbad_input_policy = "quarantine"\n')
    )
    out = run_cli("run", "--once", "-c", str(cfg))
    assert out.returncode == 0, out.stderr[-3000:]
    data = list((tmp_path / "stage" / "_quarantine" / "dbo.patients").glob("*.data"))
    assert len(data) == 1 and data[0].read_text().strip() == BAD_ROWS["unknown_op"]

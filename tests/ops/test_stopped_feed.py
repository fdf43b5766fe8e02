"""A PreserveTransactions feed (one file stream for every table, in commit order) stopped by a bad row stops
every table: each shows as STOPPED (shared), ``run --once`` exits 1, and ``skip`` on any of them sets the
row aside for the feed so every table goes on (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.helpers.support import run_cli

TXN1 = "CDC_TXN-20240101-0000000000-00001.csv"
TXN2 = "CDC_TXN-20240101-0100000000-00002.csv"
SCHEMA_T = (
    'schema = "dbo"\nname = "t"\nprimary_key = ["id"]\n[columns]\nid = "bigint not null"\nname = "text"\n'
)
SCHEMA_U = (
    'schema = "sales"\nname = "orders"\nprimary_key = ["order_id"]\n[columns]\n'
    'order_id = "bigint not null"\namount = "numeric(12,2)"\n'
)


def _config(tmp: Path) -> Path:
    (tmp / "schemas" / "tables").mkdir(parents=True)
    (tmp / "schemas" / "tables" / "t.toml").write_text(SCHEMA_T)
    (tmp / "schemas" / "tables" / "orders.toml").write_text(SCHEMA_U)
    cdc = tmp / "dms" / "cdc"
    cdc.mkdir(parents=True)
    # The second row names no table: nothing of any table after it may be applied before it (commit order).
    (cdc / TXN1).write_text("I,t,dbo,1,one\nI,t\nI,orders,sales,10,1.50\nU,t,dbo,1,uno\n")
    (cdc / TXN2).write_text("I,orders,sales,11,2.50\nI,t,dbo,2,two\n")
    path = tmp / "r.toml"
    path.write_text(
        f'schemas = "{tmp / "schemas"}"\n[source]\npath = "{tmp / "dms"}"\n[source.dms]\n'
        'preserve_transactions = true\ncdc_path = "cdc"\n'
        f'[staging]\npath = "{tmp / "stage"}"\n[warehouse]\nkind = "duckdb"\npath = "{tmp / "w.duckdb"}"\n'
        "[http]\nport = 0\n"
    )
    return path


def _tables(cfg: Path) -> dict[str, dict[str, object]]:
    out = run_cli("status", "--json", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    return {r["table"]: r for r in json.loads(out.stdout)["tables"]}


def test_a_stopped_transaction_feed_stops_every_table_and_a_skip_on_one_lets_all_go_on(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path)
    first = run_cli("run", "--once", "-c", str(cfg))
    assert first.returncode == 1, first.stderr
    assert "dbo.t" in first.stderr and "sales.orders" in first.stderr, first.stderr
    rows = _tables(cfg)
    for name in ("dbo.t", "sales.orders"):
        stop = rows[name]["stopped"]
        assert rows[name]["state"] == "stopped" and isinstance(stop, dict), rows[name]
        assert stop["shared"] is True and stop["reason"] == "column_count" and stop["row"] == 2, stop
        assert "transaction feed" in str(stop["detail"])
    text = run_cli("status", "-c", str(cfg))
    assert "STOPPED sales.orders: column_count" in text.stdout, text.stdout
    skip = run_cli("skip", "sales.orders", "-c", str(cfg))
    assert skip.returncode == 0, skip.stderr
    again = run_cli("run", "--once", "-c", str(cfg))
    assert again.returncode == 0, again.stderr
    assert all(r["state"] != "stopped" for r in _tables(cfg).values())
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("SELECT id, name FROM dbo.t ORDER BY id").fetchall() == [(1, "uno"), (2, "two")]
        assert con.execute("SELECT order_id FROM sales.orders ORDER BY 1").fetchall() == [(10,), (11,)]

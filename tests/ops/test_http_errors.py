"""A GET whose answer cannot be made (the daemon's status read raised) is answered 500 with the error, logged
and counted; never a connection closed without a word, which a client (and CI, once: ``RemoteDisconnected``
from ``GET /tables``) cannot tell from a network fault."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from replicator.config import Secret
from replicator.model import TableId
from replicator.ops.http import ObsServer
from tests.helpers.daemon import TOKEN, http


class Failing:
    """A daemon whose status reads fail the way a concurrent change could make them."""

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return True, {}

    def tables(self) -> list[dict[str, Any]]:
        raise RuntimeError("dictionary changed size during iteration")

    def status(self) -> dict[str, Any]:
        raise KeyError("dbo.payments")

    def act(self, action: str, table: TableId, *, reason: str, who: str) -> dict[str, Any]:
        raise AssertionError("not asked")


def test_a_status_read_that_raises_is_answered_500_with_the_error_and_counted() -> None:
    server = ObsServer("127.0.0.1", 0, Failing(), admin_token=Secret(TOKEN))
    server.start()
    labels = {"stage": "http", "kind": "RuntimeError"}
    before = REGISTRY.get_sample_value("replicator_errors_total", labels) or 0.0
    try:
        url = f"http://127.0.0.1:{server.port}"
        code, doc = http("GET", f"{url}/tables", token=TOKEN)
        assert code == 500, doc
        assert doc == {"error": "RuntimeError: dictionary changed size during iteration"}
        code, doc = http("GET", f"{url}/status", token=TOKEN)
        assert code == 500 and doc["error"].startswith("KeyError"), doc
        assert http("GET", f"{url}/healthz")[0] == 200  # and the server goes on
    finally:
        server.stop()
    assert (REGISTRY.get_sample_value("replicator_errors_total", labels) or 0.0) - before == 1

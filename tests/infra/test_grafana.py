"""The Grafana dashboard (infra/grafana): the committed JSON is what build.py writes, and every query names only
series a real edge or origin exports or the SLO rules record, and answers with data from a real Prometheus."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from infra_support import INFRA
from prometheus_support import metric_names, recorded_names

GRAFANA = INFRA / "grafana"


def _build_module():
    spec = importlib.util.spec_from_file_location("edgerec_grafana_build", GRAFANA / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, and the region variable's query."""
    board = json.loads((GRAFANA / "edgerec.json").read_text())
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            inner = variable["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            found.append((f"${variable['name']}", inner))
    return found


def test_the_committed_dashboard_is_what_the_script_writes():
    assert (GRAFANA / "edgerec.json").read_text() == _build_module().render()
    check = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_check_fails_on_a_stale_dashboard(tmp_path, monkeypatch):
    module = _build_module()
    stale = tmp_path / "edgerec.json"
    stale.write_text(module.render().replace("edgerec: SLOs and fleet", "an old title"))
    monkeypatch.setattr(module, "OUT", stale)
    assert module.main(["build.py", "--check"]) == 1


def test_the_dashboard_covers_the_slos_and_the_fleet():
    board = json.loads((GRAFANA / "edgerec.json").read_text())
    exprs = " ".join(expr for _, expr in _queries())
    for needed in (
        "availability:ratio_rate30d",
        "error_budget_remaining",
        "p50_5m",
        "p99_5m",
        "fallback:ratio",
        "sync_staleness_seconds",
        "events_spool_bytes",
        "edgerec_origin_up",
    ):
        assert needed in exprs, needed
    assert [p["id"] for p in board["panels"]] == list(range(1, len(board["panels"]) + 1))
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert 'region=~"$region"' in " ".join(t["expr"] for t in p["targets"]) or "origin" in p["title"].lower()


def test_every_query_names_only_series_the_edge_or_origin_exports_or_the_rules_record(live_prometheus):
    recorded = recorded_names()
    for title, expr in _queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        for name in names:
            assert name in live_prometheus.exported or name in recorded or name == "up", f"{title}: {name}"


@pytest.mark.parametrize("title,expr", _queries(), ids=[t for t, _ in _queries()])
def test_every_query_returns_data_for_a_real_edge(live_prometheus, title, expr):
    query = expr.replace("$region", live_prometheus.edge_region)
    assert live_prometheus.query(query), f"{title}: {query} returned nothing"

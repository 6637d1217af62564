"""Builds infra/grafana/edgerec.json, the edgerec SLO dashboard, from plain dicts (Grafana's dashboard JSON model).

    python infra/grafana/build.py           write edgerec.json
    python infra/grafana/build.py --check   exit 1 if edgerec.json is not what this script writes

The panels read the recording rules of infra/prometheus/rules/edgerec-slo.yml and a few raw edge/origin series;
tests/infra/test_grafana.py checks each name against a real edge's and origin's /metrics and runs every query
against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("edgerec.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
REGION = 'region=~"$region"'
EDGE = f'job="edgerec-edge", {REGION}'
BUDGET = "0.00001"  # 1 - 99.999 %


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def per_region(rule: str, legend: str = "") -> tuple[str, str]:
    """A recording rule's per-region series for the regions picked on the dashboard, legend `<region> <legend>`."""
    return f"region:{rule}{{{REGION}}}", f"{{{{region}}}} {legend}".rstrip()


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def threshold_lines(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """Field settings that draw the thresholds of a time series as lines."""
    return {"thresholds": thresholds(*steps), "custom": {"thresholdsStyle": {"mode": "line"}}}


def panel(
    kind: str,
    title: str,
    description: str,
    width: int,
    *targets: tuple[str, str],
    unit: str = "short",
    **field: Any,
) -> dict[str, Any]:
    """One panel `width` of the 24 columns wide, with one query a (PromQL, legend) target; `layout` places it."""
    defaults: dict[str, Any] = {"unit": unit, **field}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": 0, "y": 0, "w": width, "h": 0},
        "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        if kind in ("stat", "gauge")
        else {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def timeseries(title: str, description: str, width: int, *targets: tuple[str, str], **field: Any) -> dict[str, Any]:
    return panel("timeseries", title, description, width, *targets, **field)


def stat(title: str, description: str, width: int, *targets: tuple[str, str], **field: Any) -> dict[str, Any]:
    return panel("stat", title, description, width, *targets, **field)


def layout(*sections: tuple[str, int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each (row title, height, panels) section top to bottom: a row one unit high, its panels left to right below."""
    placed: list[dict[str, Any]] = []
    y = 0
    for title, height, members in sections:
        placed.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        x = 0
        for member in members:
            member["gridPos"].update(x=x, y=y + 1, h=height)
            x += member["gridPos"]["w"]
            placed.append(member)
        y += 1 + height
    return placed


# Replicas answering their scrape: none is an outage, one has no redundancy left.
UP_THRESHOLDS = thresholds(("red", None), ("orange", 1), ("green", 2))


def burn_rate(window: str) -> tuple[str, str]:
    expr, legend = per_region(f"edgerec_recommendation_error_ratio:rate{window}", window)
    return f"{expr} / {BUDGET}", legend


def panels() -> list[dict[str, Any]]:
    return layout(
        (
            "Availability SLO: 99.999 % of answers not 5xx, per region, 30 days",
            6,
            [
                stat(
                    "Availability, 30 days",
                    "Answers of /v1/recommendations that were not 5xx (fallbacks count as served).",
                    6,
                    per_region("edgerec_recommendation_availability:ratio_rate30d"),
                    unit="percentunit",
                    decimals=4,
                    thresholds=thresholds(("red", None), ("green", 0.99999)),
                ),
                panel(
                    "gauge",
                    "Error budget left, 30 days",
                    "1 = untouched, 0 = spent (1e-5 of the answers, 26 s of full outage a month); below 0 overspent.",
                    6,
                    per_region("edgerec_availability_error_budget_remaining:ratio30d"),
                    unit="percentunit",
                    min=0,
                    max=1,
                    thresholds=thresholds(("red", None), ("orange", 0), ("green", 0.25)),
                ),
                timeseries(
                    "Burn rate (1 = spending the budget at its pace)",
                    "Error ratio over the budget; the pages fire at 14.4 (1h and 5m) and 6 (6h and 30m).",
                    12,
                    *(burn_rate(window) for window in ("5m", "1h", "6h")),
                    **threshold_lines(("green", None), ("orange", 6), ("red", 14.4)),
                ),
            ],
        ),
        (
            "Latency and traffic",
            8,
            [
                timeseries(
                    "Answer time p50 / p99",
                    "The edge's own time per answer (the latency SLO: p99 under 20 ms).",
                    8,
                    per_region("edgerec_recommendation_duration_seconds:p50_5m", "p50"),
                    per_region("edgerec_recommendation_duration_seconds:p99_5m", "p99"),
                    unit="s",
                    **threshold_lines(("green", None), ("red", 0.02)),
                ),
                timeseries(
                    "Answers and 5xx per second",
                    "All answers of /v1/recommendations, and the 5xx among them.",
                    8,
                    per_region("edgerec_recommendation_requests:rate5m", "answers"),
                    per_region("edgerec_recommendation_errors:rate5m", "5xx"),
                    unit="reqps",
                ),
                timeseries(
                    "Fallback share",
                    "Answers from the popularity fallback among the 2xx ones, and "
                    "fallbacks by reason (the ticket fires over 5 %).",
                    8,
                    per_region("edgerec_fallback:ratio_rate5m", "share"),
                    (
                        f"sum by (region, reason) (rate(edgerec_fallback_total{{{EDGE}}}[5m]))",
                        "{{region}} {{reason}} /s",
                    ),
                    unit="percentunit",
                ),
            ],
        ),
        (
            "Sync and events",
            8,
            [
                timeseries(
                    "Sync age",
                    "Seconds since each edge last heard the origin (a long-poll answers within 25 s when all is well).",
                    8,
                    per_region("edgerec_sync_staleness_seconds:max", "oldest"),
                    (f"edgerec_sync_staleness_seconds{{{EDGE}}}", "{{pod}}"),
                    unit="s",
                    **threshold_lines(("green", None), ("orange", 300), ("red", 900)),
                ),
                timeseries(
                    "Versions behind the origin",
                    "Origin version minus the applied one, per edge.",
                    4,
                    (f"edgerec_sync_versions_behind{{{EDGE}}}", "{{pod}}"),
                ),
                timeseries(
                    "Event spool backlog",
                    "Bytes of events on the edges' disks not yet acknowledged by the origin, and events shipped per "
                    "second.",
                    6,
                    per_region("edgerec_events_spool_bytes:sum", "bytes"),
                    per_region("edgerec_events_shipped:rate5m", "shipped /s"),
                    unit="bytes",
                ),
                timeseries(
                    "Events dropped",
                    "Events lost in 5 minutes, by reason (torn_write counts torn segment tails).",
                    6,
                    (
                        f"sum by (region, reason) (increase(edgerec_events_dropped_total{{{EDGE}}}[5m]))",
                        "{{region}} {{reason}}",
                    ),
                ),
            ],
        ),
        (
            "Fleet",
            5,
            [
                stat(
                    "Origin replicas up",
                    "Origin replicas answering their scrape (0: the page EdgerecOriginDown).",
                    6,
                    ("job:edgerec_origin_up:sum", "origin"),
                    thresholds=UP_THRESHOLDS,
                ),
                stat(
                    "Edges up",
                    "Edges answering their scrape, per region.",
                    18,
                    (f"sum by (region) (up{{{EDGE}}})", "{{region}}"),
                    thresholds=UP_THRESHOLDS,
                ),
            ],
        ),
    )


def dashboard() -> dict[str, Any]:
    return {
        "uid": "edgerec-slo",
        "title": "edgerec: SLOs and fleet",
        "description": "Availability and latency SLOs per region, fallbacks, sync age, event spool, origin "
        "(infra/grafana/build.py; the alerts' runbook: docs/operations.md#alerts).",
        "tags": ["edgerec", "slo"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "region",
                    "label": "Region",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": "label_values(region:edgerec_recommendation_requests:rate5m, region)",
                    "query": "label_values(region:edgerec_recommendation_requests:rate5m, region)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "sort": 1,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        # Grafana keys panel state (links, the panel editor) by id: fixed, in layout order.
        "panels": [{"id": i, **p} for i, p in enumerate(panels(), start=1)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print("usage: build.py [--check]", file=sys.stderr)
        return 2
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

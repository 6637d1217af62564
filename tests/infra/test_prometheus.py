"""The SLO rules (infra/prometheus): promtool's checks and unit tests, each alert proven to fire and not to fire,
a runbook entry for each, and a real Prometheus evaluating them over a real edge's and origin's metrics."""

from __future__ import annotations

import math
import re
import subprocess

import pytest
from infra_support import REPO
from prometheus_support import PROMETHEUS_DIR, RULES, metric_names, recorded_names, tool

UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def _rules() -> list[dict]:
    import yaml

    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS_DIR)


def test_promtool_accepts_the_rules():
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass():
    assert UNIT_TESTS
    result = _promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS)


def test_promtool_unit_tests_can_fail(tmp_path):
    """A wrong expectation fails: the unit tests above prove something."""
    import yaml

    suite = yaml.safe_load(UNIT_TESTS[0].read_text())
    suite["rule_files"] = [str(RULES)]
    for case in suite["tests"][0]["alert_rule_test"]:
        case["exp_alerts"] = [] if case["exp_alerts"] else [{"exp_labels": {"region": "gb"}}]
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(suite))
    result = _promtool("test", "rules", str(broken))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_every_alert_is_proven_to_fire_and_not_to_fire():
    import yaml

    fired, quiet = set(), set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - fired == set(), "alerts no unit test shows firing"
    assert alerts - quiet == set(), "alerts no unit test shows staying quiet"


def test_every_alert_has_a_severity_and_a_runbook_entry():
    docs = (REPO / "docs" / "operations.md").read_text()
    section = docs.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    headings = {h.strip().lower() for h in re.findall(r"^#### (\S+)", section, re.M)}
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert name.lower() in headings, f"docs/operations.md, Alerts, has no entry for {name}"
    assert headings == {name.lower() for name in _alerts()}, "runbook entries for alerts that do not exist"


def test_every_metric_the_rules_read_is_exported_by_the_edge_or_the_origin_or_recorded(live_prometheus):
    recorded = recorded_names()
    for rule in _rules():
        for name in metric_names(rule["expr"]):
            assert name in live_prometheus.exported or name in recorded or name in ("up", "ALERTS"), (
                f"{rule.get('record') or rule.get('alert')}: {name} is neither exported nor recorded"
            )


def test_a_real_prometheus_evaluates_every_recording_rule_for_a_real_edge(live_prometheus):
    live, region = live_prometheus, live_prometheus.edge_region
    for name in sorted(recorded_names()):
        selector = "{}" if name.startswith("job:") else f'{{region="{region}"}}'
        result = live.query(name + selector)
        assert len(result) == 1, f"{name}: {result}"
        value = float(result[0]["value"][1])
        assert not math.isnan(value), f"{name} is NaN"


def test_the_edges_503s_and_200s_and_fallbacks_reach_the_slo_ratios(live_prometheus):
    live, region = live_prometheus, live_prometheus.edge_region
    assert live.answers == {"503": 15, "200": 16}, live.answers
    ratio = live.value(f'region:edgerec_recommendation_error_ratio:rate5m{{region="{region}"}}')
    assert 0.2 < ratio < 0.8, ratio  # 15 of 31 counted answers failed; rate() extrapolates each series
    assert live.value(f'region:edgerec_availability_error_budget_remaining:ratio30d{{region="{region}"}}') < 0
    # The model budget no run meets sends nearly every answer to the fallback (rate() extrapolates the fallback and
    # the 200 series, which began at different scrapes, a little differently: the share can read above 1 here).
    assert 0.5 < live.value(f'region:edgerec_fallback:ratio_rate5m{{region="{region}"}}') < 1.5
    p99 = live.value(f'region:edgerec_recommendation_duration_seconds:p99_5m{{region="{region}"}}')
    assert 0 < p99 < 1
    assert 0 <= live.value(f'region:edgerec_sync_staleness_seconds:max{{region="{region}"}}') < 60
    assert live.value("job:edgerec_origin_up:sum") == 1  # scraped over HTTPS, verified as edgerec-origin.edgerec.svc


def test_a_burst_of_503s_at_a_real_edge_starts_the_fast_burn_page(live_prometheus):
    live, region = live_prometheus, live_prometheus.edge_region
    alerts = live.wait_for(f'ALERTS{{alertname="EdgerecAvailabilityFastBurn", region="{region}"}}')
    assert alerts[0]["metric"]["severity"] == "page"
    assert not live.query('ALERTS{alertname=~"EdgerecOriginDown|EdgerecEdgeRegionDown"}')


@pytest.mark.parametrize("label", ["job", "region", "pod"])
def test_the_relabelling_names_the_edge_as_the_rules_expect(live_prometheus, label):
    (target,) = live_prometheus.query('up{job="edgerec-edge"}')
    assert (
        target["metric"][label]
        == {"job": "edgerec-edge", "region": live_prometheus.edge_region, "pod": "edge-gb-0"}[label]
    )

"""The learning pipeline against a real origin: its decisions on crafted event sets (win, loss, guardrail breach,
not enough data), a run killed mid-way that resumes without two active models, and a candidate served only inside
its experiment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgerec.cli.pipeline import EXIT_FAULT, FAULT_ENV, Pipeline  # noqa: E402
from edgerec.cli.pipeline_rules import Policy  # noqa: E402
from edgerec.cli.services import Cluster  # noqa: E402
from tests.conftest import REPO, served, wait_until
from tests.loop_support import experiment_traffic, shop_events, store_events, store_health

POLICY = Policy(gate_margin=1.0, min_impressions=500, stage_impressions=50_000, max_stage_s=3600)


@pytest.fixture
def shop(cluster: Cluster, synthetic_csv: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster serving the session's bundle, its event sink holding the synthetic shop's purchases."""
    monkeypatch.setenv("EDGEREC_ADMIN_TOKEN", cluster.admin_token)
    cluster.publish()
    store_events(events_db(cluster), shop_events(synthetic_csv))
    return cluster


def events_db(cluster: Cluster) -> Path:
    return cluster.workdir / "origin" / "events.db"


def models(cluster: Cluster) -> dict[str, str]:
    return {m["version"]: m["state"] for m in cluster.admin("GET", "/v1/admin/models")["models"]}


def active_models(cluster: Cluster) -> list[str]:
    return [version for version, state in models(cluster).items() if state == "active"]


def started(cluster: Cluster, tmp_path: Path, policy: Policy = POLICY) -> Pipeline:
    """A pipeline whose first round has trained, passed its gates, published its candidate and started stage 1."""
    pipeline = Pipeline(cluster.origin.url, tmp_path / "pipeline", policy=policy, progress=False)
    pipeline.open_round()
    assert pipeline.advance() == "watch"
    round_ = pipeline.state["round"]
    assert models(cluster)[round_["candidate"]] == "candidate"
    assert active_models(cluster) == [round_["served"]]
    return pipeline


def traffic(cluster: Cluster, pipeline: Pipeline, rates: dict[str, float], impressions: dict[str, int]) -> None:
    experiment = pipeline.state["round"]["experiment"]
    store_events(events_db(cluster), experiment_traffic(experiment, rates, impressions, ts=time.time()))


def decided(cluster: Cluster, tmp_path: Path, rates: dict[str, float], impressions: dict[str, int]) -> dict:
    """The round of a started pipeline once this traffic has decided it (its next step ends the round)."""
    pipeline = started(cluster, tmp_path)
    traffic(cluster, pipeline, rates, impressions)
    assert pipeline.advance() == "done"
    return pipeline.state["round"]


def decisions(cluster: Cluster) -> list[tuple[str, str]]:
    entries = cluster.admin("GET", "/v1/admin/pipeline/decisions?pipeline=default")["decisions"]
    return [(e["step"], e["decision"]) for e in reversed(entries)]


def test_a_significant_win_promotes_the_candidate_with_its_evidence_in_the_audit_log(shop, tmp_path) -> None:
    round_ = decided(shop, tmp_path, {"served": 0.05, "candidate": 0.12}, {"served": 9000, "candidate": 1000})
    assert round_["outcome"] == "promoted"
    assert active_models(shop) == [round_["candidate"]]
    assert models(shop)[round_["served"]] == "retired"
    steps = decisions(shop)
    assert steps == [
        ("train", "trained"),
        ("gate", "passed"),
        ("parity", "passed"),
        ("publish", "candidate"),
        ("experiment", "started"),
        ("watch", "win"),
        ("promote", "promoted"),
    ]
    win = next(e for e in shop.admin("GET", "/v1/admin/pipeline/decisions")["decisions"] if e["decision"] == "win")
    assert win["evidence"]["sequential"]["p_value"] < 0.05 and win["evidence"]["impressions"]["candidate"] == 1000
    audit = shop.admin("GET", "/v1/admin/audit?limit=200")["entries"]
    assert any((e["target"] or "").endswith("step=promote,decision=promoted") for e in audit)
    experiment = shop.admin("GET", f"/v1/admin/experiments/{round_['experiment']}")["experiment"]
    assert experiment["end"] is not None and experiment["end"] <= time.time()


def test_a_significant_loss_stops_the_experiment_and_retires_the_candidate(shop, tmp_path) -> None:
    round_ = decided(shop, tmp_path, {"served": 0.10, "candidate": 0.02}, {"served": 9000, "candidate": 1000})
    assert round_["outcome"] == "loss"
    assert active_models(shop) == [round_["served"]]
    assert models(shop)[round_["candidate"]] == "retired"
    assert decisions(shop)[-2:] == [("watch", "loss"), ("stop", "stopped")]


def test_a_broken_split_breaches_a_guardrail_and_stops(shop, tmp_path) -> None:
    # Half the impressions on a 10% arm: the sample ratio says the split is broken, whatever the conversions say.
    round_ = decided(shop, tmp_path, {"served": 0.05, "candidate": 0.2}, {"served": 3000, "candidate": 3000})
    assert round_["outcome"] == "guardrail"
    assert active_models(shop) == [round_["served"]]


def test_a_candidate_falling_back_more_than_the_served_model_breaches_its_guardrail(shop, tmp_path) -> None:
    pipeline = started(shop, tmp_path)
    experiment = pipeline.state["round"]["experiment"]
    # Conversion would say win; the edges' health counters say the candidate answers from the fallback too often.
    traffic(shop, pipeline, {"served": 0.05, "candidate": 0.12}, {"served": 9000, "candidate": 1000})
    store_health(events_db(shop), experiment, {"served": (9000, 9, 0), "candidate": (1000, 80, 40)})
    assert pipeline.advance() == "done"
    round_ = pipeline.state["round"]
    assert round_["outcome"] == "guardrail"
    assert "fallbacks rate 0.0800" in round_["decisions"][-2]["reason"]
    assert models(shop)[round_["candidate"]] == "retired" and active_models(shop) == [round_["served"]]


def test_too_little_data_for_too_long_stops_without_a_decision_on_conversion(shop, tmp_path) -> None:
    pipeline = started(shop, tmp_path, Policy(gate_margin=1.0, min_impressions=500, max_stage_s=1.0))
    traffic(shop, pipeline, {"served": 0.05, "candidate": 0.5}, {"served": 90, "candidate": 10})
    assert pipeline.advance() == "watch"  # waiting: under 500 impressions a variant
    assert pipeline.state["round"]["last_look"]["outcome"] == "collecting"
    time.sleep(1.1)
    assert pipeline.advance() == "done"
    assert pipeline.state["round"]["outcome"] == "not_enough_data"
    assert models(shop)[pipeline.state["round"]["candidate"]] == "retired"


def test_the_offline_gate_rejects_a_candidate_worse_than_the_margin(shop, tmp_path) -> None:
    pipeline = Pipeline(shop.origin.url, tmp_path / "p", policy=Policy(gate_margin=-1.0), progress=False)
    pipeline.open_round()
    assert pipeline.advance() == "done"
    assert pipeline.state["round"]["outcome"] == "rejected"
    assert pipeline.state["round"]["candidate"] not in models(shop)  # never published


def _run(cluster: Cluster, state_dir: Path, fault: str | None = None) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "EDGEREC_ORIGIN_URL": cluster.origin.url,
        "EDGEREC_ADMIN_TOKEN": cluster.admin_token,
    }
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    command = [sys.executable, "-m", "edgerec", "pipeline", "run", "--state-dir", str(state_dir), "--quiet"]
    command += ["--gate-margin", "1", "--min-impressions", "500", "--poll", "0.2"]
    return subprocess.run(command, env=env, cwd=REPO, timeout=240, capture_output=True).returncode


def test_a_pipeline_killed_during_promotion_resumes_and_never_leaves_two_active_models(shop, tmp_path) -> None:
    state_dir = tmp_path / "pipeline"
    assert _run(shop, state_dir) == 0
    pipeline = Pipeline(shop.origin.url, state_dir)
    round_ = pipeline.state["round"]
    assert round_["step"] == "watch"
    traffic(shop, pipeline, {"served": 0.05, "candidate": 0.12}, {"served": 9000, "candidate": 1000})
    for fault in ("promote-ended", "promote-activated"):
        assert _run(shop, state_dir, fault) == EXIT_FAULT
        assert len(active_models(shop)) == 1
        assert Pipeline(shop.origin.url, state_dir).state["round"]["step"] == "promote"
    assert active_models(shop) == [round_["candidate"]]
    assert _run(shop, state_dir) == 0
    resumed = Pipeline(shop.origin.url, state_dir).state["round"]
    assert resumed["id"] == round_["id"] and resumed["outcome"] == "promoted"
    assert active_models(shop) == [round_["candidate"]]
    assert [d for d in decisions(shop) if d[0] == "promote"] == [("promote", "promoted")]
    experiments = shop.admin("GET", "/v1/admin/experiments")["experiments"]
    assert [e["id"] for e in experiments] == [round_["experiment"]]  # the resumed runs made no second one


def test_a_run_killed_after_starting_its_experiment_resumes_that_experiment(shop, tmp_path) -> None:
    state_dir = tmp_path / "pipeline"
    assert _run(shop, state_dir, "experiment") == EXIT_FAULT
    assert Pipeline(shop.origin.url, state_dir).state["round"]["step"] == "experiment"
    assert _run(shop, state_dir) == 0
    assert len(shop.admin("GET", "/v1/admin/experiments")["experiments"]) == 1
    assert Pipeline(shop.origin.url, state_dir).state["round"]["step"] == "watch"


def test_a_candidate_is_served_only_to_its_experiment_variant(shop, catalog_skus, tmp_path) -> None:
    from tests.conftest import make_offer

    version = shop.put_offers([make_offer(f"GB-{sku}", sku) for sku in catalog_skus[:20]])
    pipeline = started(shop, tmp_path)
    round_ = pipeline.state["round"]
    edge = shop.start_edge("GB")
    shop.wait_for_version(version)

    def answers() -> list[dict]:
        return [served(edge, {"shopper_id": f"shopper-{n}", "region": "GB", "k": 3}) for n in range(150)]

    wait_until(lambda: any(a.get("experiment") == round_["experiment"] for a in answers()), timeout_s=30)
    seen = answers()
    by_candidate = [a for a in seen if a["model_version"] == round_["candidate"]]
    assert by_candidate and len(by_candidate) < len(seen) / 2  # its 10% share, give or take
    assert all(a["experiment"] == round_["experiment"] and a["variant"] == "candidate" for a in by_candidate)
    assert all(a["model_version"] == round_["served"] for a in seen if a.get("variant") != "candidate")

    # The edge ships per-variant health counters with its events: every answer counted, timed or a fallback.
    def health() -> dict:
        report = shop.admin("GET", f"/v1/admin/experiments/{round_['experiment']}/report")
        return report["health"] if report["health"].get("candidate", {}).get("answers") else {}

    counters = wait_until(health, timeout_s=30)
    for cell in counters.values():
        assert sum(cell["model_ms"]) + cell["fallbacks"] == cell["answers"] > 0
    traffic(shop, pipeline, {"served": 0.10, "candidate": 0.02}, {"served": 9000, "candidate": 1000})
    assert pipeline.advance() == "done"
    wait_until(lambda: all(a["model_version"] == round_["served"] for a in answers()), timeout_s=30)
    assert all(a.get("experiment") is None for a in answers())


def test_model_train_from_origin_reads_its_events_and_compares_with_its_active_model(shop, tmp_path) -> None:
    import json

    from edgerec.cli.main import main

    out = tmp_path / "bundle"
    assert main(["model", "train", "--from-origin", shop.origin.url, "--out", str(out)]) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["held_out_week"]["models"]["served"]["version"] == active_models(shop)[0]
    assert report["counts"]["purchase"] > 0 and report["counts"]["shown_not_taken"] > 0


def test_pipeline_status_shows_the_round_and_the_origins_decisions(shop, tmp_path, capsys) -> None:
    import json

    from edgerec.cli.main import main

    pipeline = started(shop, tmp_path)
    state_dir = str(tmp_path / "pipeline")
    base = ["pipeline", "status", "--origin", shop.origin.url, "--state-dir", state_dir]
    capsys.readouterr()
    assert main(base) == 0
    text = capsys.readouterr().out
    assert f"round {pipeline.state['round']['id']}: at step watch" in text and "experiment started" in text
    assert main([*base, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["round"]["candidate"] == pipeline.state["round"]["candidate"]
    assert [d["step"] for d in status["decisions"]][0] == "experiment"


def test_pipeline_stop_ends_the_experiment_and_retires_the_candidate(shop, tmp_path) -> None:
    from edgerec.cli.main import main

    pipeline = started(shop, tmp_path)
    round_ = pipeline.state["round"]
    args = ["pipeline", "stop", "--origin", shop.origin.url, "--state-dir", str(tmp_path / "pipeline")]
    assert main([*args, "--reason", "campaign week"]) == 0
    assert models(shop)[round_["candidate"]] == "retired" and active_models(shop) == [round_["served"]]
    experiment = shop.admin("GET", f"/v1/admin/experiments/{round_['experiment']}")["experiment"]
    assert experiment["end"] <= time.time()
    stored = Pipeline(shop.origin.url, tmp_path / "pipeline").state
    assert stored["round"]["outcome"] == "stopped_by_hand" and stored["rounds"][-1]["outcome"] == "stopped_by_hand"
    last = shop.admin("GET", "/v1/admin/pipeline/decisions?limit=1")["decisions"][0]
    assert (last["step"], last["evidence"]["reason"]) == ("stop", "campaign week")
    assert main(args) == 0  # nothing open: a no-op

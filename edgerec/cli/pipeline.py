"""The learning pipeline: train on the shop's events → offline gate → golden outputs and ONNX parity → publish as a
candidate → experiment (candidate against the served model, stage by stage) → watch → promote or stop.

A round's state lives in one JSON file, written atomically after every step, and every step is idempotent: a
pipeline killed anywhere resumes at the step it was in and redoes it. Only a promotion activates a model, and the
origin's activation retires the model active before in the same transaction, so there is never a second active
model; a candidate is served only by its experiment's variant, and a stopped round ends its experiment and retires
the candidate. Every decision goes to the origin (POST /v1/admin/pipeline/decisions, audited) with its evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from edgerec.cli.admin import AdminError, _call
from edgerec.cli.pipeline_rules import CANDIDATE, CONTROL, NEXT_STAGE, PROMOTE, STOP, WAIT, Policy, look, offline_gate
from edgerec.cli.services import bundle_upload
from edgerec.cli.training import REPORT_JSON, active_version, events_from_origin, events_from_sql, fetch_bundle
from edgerec.cli.training import train_from_events as train_bundle_from_events
from edgerec.core.files import write_atomically

STATE_FILE = "state.json"
FAULT_ENV = "EDGEREC_PIPELINE_FAULT"  # drills and tests: exit at this point, after its effect, before it is saved
EXIT_FAULT = 75


class Pipeline:
    """One pipeline (by name) against one origin, its state in `state_dir`."""

    def __init__(
        self,
        origin: str,
        state_dir: Path,
        *,
        name: str = "default",
        policy: Policy | None = None,
        events: str | None = None,
        store: str | None = None,
        seed: int = 0,
        orders: Path | None = None,
        clock: Callable[[], float] = time.time,
        progress: bool = True,
        adjust: Callable[[Any], Any] | None = None,
    ) -> None:
        self.origin, self.state_dir, self.name = origin, Path(state_dir), name
        self.policy = policy or Policy()
        self.events, self.store, self.seed, self.clock, self.progress = events, store, seed, clock, progress
        self.orders = orders
        self.adjust = adjust  # drills and benchmarks: a change to the trained ranker (a deliberately bad candidate)
        self.args = argparse.Namespace(origin=origin)
        path = self.state_dir / STATE_FILE
        self.state: dict[str, Any] = (
            json.loads(path.read_text()) if path.is_file() else {"pipeline": name, "round": None, "rounds": []}
        )

    # -- state, decisions
    def save(self) -> None:
        write_atomically(self.state_dir / STATE_FILE, json.dumps(self.state, indent=2, sort_keys=True).encode())

    def _fault(self, point: str) -> None:
        if os.environ.get(FAULT_ENV) == point:
            os._exit(EXIT_FAULT)

    def decide(self, step: str, decision: str, evidence: dict[str, Any]) -> None:
        """Record a decision at the origin (its audit log names it) and in the round's own trail."""
        round_ = self.state["round"]
        entry = {"pipeline": self.name, "round": round_["id"], "step": step, "decision": decision}
        _call(self.args, "POST", "/v1/admin/pipeline/decisions", {**entry, "evidence": evidence})
        round_["decisions"].append({**entry, "ts": self.clock(), "reason": evidence.get("reason")})

    @property
    def round_dir(self) -> Path:
        return self.state_dir / "rounds" / self.state["round"]["id"]

    # -- one pass
    def open_round(self) -> dict[str, Any]:
        now = self.clock()
        round_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        self.state["round"] = {
            "id": round_id,
            "started": now,
            "step": "train",
            "policy": self.policy.as_dict(),
            "stage": 0,
            "decisions": [],
        }
        self.state["last_round_started"] = now
        self.save()
        return self.state["round"]

    def advance(self) -> str:
        """Run the open round's steps until it waits for data or ends; returns its step then ("watch" or "done")."""
        steps = {
            "train": self._train,
            "gate": self._gate,
            "parity": self._parity,
            "publish": self._publish,
            "experiment": self._experiment,
            "watch": self._watch,
            "promote": self._promote,
            "stop": self._stop,
        }
        while self.state["round"] is not None and self.state["round"]["step"] != "done":
            step = self.state["round"]["step"]
            if not steps[step]():
                return step  # waiting for data
            self.save()
        return "done"

    def _goto(self, step: str) -> bool:
        self.state["round"]["step"] = step
        return True

    def _close(self, outcome: str) -> bool:
        round_ = self.state["round"]
        round_ |= {"outcome": outcome, "ended": self.clock(), "step": "done"}
        self.state["rounds"] = [*self.state["rounds"], _summary(round_)][-50:]
        return True

    # -- the steps: each returns True when it moved the round on, False when it waits
    def _train(self) -> bool:
        round_ = self.state["round"]
        served = active_version(self.origin)
        if served is None:
            self.decide("train", "skipped", {"reason": "no active model to compare with (activate the first by hand)"})
            return self._close("no_served_model")
        out, served_dir = self.round_dir / "candidate", self.round_dir / "served"
        shutil.rmtree(out, ignore_errors=True)  # a half-written bundle of a killed run
        fetch_bundle(self.origin, served, served_dir)
        events, skus = (
            events_from_sql(self.events, self.store, self.progress)
            if self.events
            else events_from_origin(self.origin, self.progress)
        )
        from models.data import DataError

        try:
            report = train_bundle_from_events(
                events,
                skus,
                out,
                served_bundle=served_dir,
                seed=self.seed,
                progress=self.progress,
                orders=self.orders,
                adjust=self.adjust,
            )
        except DataError as exc:
            self.decide("train", "failed", {"reason": str(exc), "events": len(events)})
            return self._close("not_enough_data")
        round_ |= {"served": served, "candidate": report["model_version"]}
        evidence = {k: report[k] for k in ("model_version", "data_window", "training_window", "counts", "seed")}
        if report["model_version"] == served:
            self.decide("train", "unchanged", {**evidence, "reason": "the same model as the served one"})
            return self._close("unchanged")
        self.decide("train", "trained", evidence)
        return self._goto("gate")

    def _gate(self) -> bool:
        report = json.loads((self.round_dir / "candidate" / REPORT_JSON).read_text())
        passed, evidence = offline_gate(report["held_out_week"], self.policy)
        self.decide("gate", "passed" if passed else "failed", evidence)
        return self._goto("parity") if passed else self._close("rejected")

    def _parity(self) -> bool:
        """Load the bundle as an edge would: ONNX Runtime must give the numpy reference's golden outputs (one by
        one, then in one padded batch); a bundle that fails is never published."""
        from models.runtime import BundleError, Ranker

        try:
            ranker = Ranker.load(self.round_dir / "candidate")
        except (BundleError, ValueError) as exc:
            self.decide("parity", "failed", {"reason": str(exc)})
            return self._close("rejected")
        cases = len(ranker.manifest["golden"])
        self.decide("parity", "passed", {"golden_cases": cases, "sha256": ranker.sha256, "reason": "golden outputs"})
        return self._goto("publish")

    def _publish(self) -> bool:
        _, body = bundle_upload(self.round_dir / "candidate")
        answer = _call(
            self.args,
            "POST",
            "/v1/admin/models?state=candidate",
            body=body,
            content_type="application/x-msgpack",
            timeout=300,
        )
        self.decide("publish", answer["state"], {"model_version": answer["model_version"], "reason": "candidate"})
        return self._goto("experiment")

    def _experiment_id(self) -> str:
        round_ = self.state["round"]
        return f"{self.name}-{round_['id']}-s{round_['stage'] + 1}".lower()

    def _experiment(self) -> bool:
        round_ = self.state["round"]
        share = self.policy.stages[round_["stage"]]
        experiment_id = self._experiment_id()
        existing = {e["id"]: e for e in _call(self.args, "GET", "/v1/admin/experiments")["experiments"]}
        if experiment_id not in existing:  # a resumed run finds its experiment made
            _call(
                self.args,
                "PUT",
                f"/v1/admin/experiments/{quote(experiment_id, safe='')}",
                {
                    "variants": [
                        {"name": CONTROL, "weight": round((1 - share) * 1000, 3), "model": round_["served"]},
                        {"name": CANDIDATE, "weight": round(share * 1000, 3), "model": round_["candidate"]},
                    ],
                    "start": self.clock(),
                },
            )
            self._fault("experiment")
            self.decide("experiment", "started", {"experiment": experiment_id, "share": share, "reason": "staged"})
        round_ |= {"experiment": experiment_id, "stage_started": existing.get(experiment_id, {}).get("start")}
        round_["stage_started"] = round_["stage_started"] or self.clock()
        return self._goto("watch")

    def _watch(self) -> bool:
        round_ = self.state["round"]
        report = _call(self.args, "GET", f"/v1/admin/experiments/{quote(round_['experiment'], safe='')}/report")
        decision, outcome, evidence = look(report, round_["stage"], self.clock() - round_["stage_started"], self.policy)
        evidence["experiment"] = round_["experiment"]
        round_["last_look"] = {"ts": self.clock(), "decision": decision, "outcome": outcome, **evidence}
        if decision == WAIT:
            self.save()
            return False
        self.decide("watch", outcome, evidence)
        if decision == NEXT_STAGE:
            self._end_experiment()
            round_["stage"] += 1
            return self._goto("experiment")
        if decision == PROMOTE:
            return self._goto("promote")
        assert decision == STOP
        round_["stop_outcome"] = outcome
        return self._goto("stop")

    def _end_experiment(self) -> None:
        """End the round's experiment now (again after a restart: a no-op once ended)."""
        experiment_id = self.state["round"].get("experiment")
        if experiment_id is None:
            return
        path = f"/v1/admin/experiments/{quote(experiment_id, safe='')}"
        experiment = _call(self.args, "GET", path)["experiment"]
        now = self.clock()
        if experiment["end"] is not None and experiment["end"] <= now:
            return
        experiment["end"] = now
        experiment["start"] = min(experiment["start"] or now - 1, now - 1)
        experiment["variants"] = [{k: v for k, v in x.items() if k != "model_ref"} for x in experiment["variants"]]
        _call(self.args, "PUT", path, experiment)

    def _promote(self) -> bool:
        round_ = self.state["round"]
        self._end_experiment()
        self._fault("promote-ended")
        answer = _call(self.args, "POST", f"/v1/admin/models/{quote(round_['candidate'], safe='')}/activate")
        self._fault("promote-activated")
        self.decide(
            "promote",
            "promoted",
            {
                "model_version": round_["candidate"],
                "replaces": round_["served"],
                "data_version": answer["data_version"],
            },
        )
        return self._close("promoted")

    def _stop(self) -> bool:
        round_ = self.state["round"]
        self._end_experiment()
        self._fault("stop-ended")
        try:
            _call(self.args, "POST", f"/v1/admin/models/{quote(round_['candidate'], safe='')}/retire")
        except AdminError as exc:
            # 409: the candidate was made active by hand meanwhile (leave it so); 404: it was never published.
            if "HTTP 409" not in str(exc) and "HTTP 404" not in str(exc):
                raise
        outcome = round_.get("stop_outcome", "stopped")
        reason = round_.get("stop_reason", outcome)
        self.decide("stop", "stopped", {"model_version": round_["candidate"], "outcome": outcome, "reason": reason})
        return self._close(outcome)


def stop_by_hand(pipeline: Pipeline, reason: str) -> dict[str, Any] | None:
    """End the open round now: its experiment ended, its candidate retired, the decision recorded with `reason`.
    None without an open round. A round that is promoting is left to finish (`pipeline run` resumes it)."""
    round_ = pipeline.state["round"]
    if round_ is None or round_["step"] == "done":
        return None
    if round_["step"] == "promote":
        raise AdminError("the round is being promoted; `edgerec pipeline run` finishes it (activate back to undo)")
    round_ |= {"stop_outcome": "stopped_by_hand", "stop_reason": reason}
    if round_.get("candidate") is None or round_["step"] in ("train", "gate", "parity"):
        pipeline.decide("stop", "stopped", {"reason": reason, "outcome": "stopped_by_hand"})
        pipeline._close("stopped_by_hand")
        pipeline.save()
    else:
        round_["step"] = "stop"
        pipeline.save()
        pipeline.advance()
    return dict(round_)


def _summary(round_: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "started", "ended", "outcome", "candidate", "served", "stage", "experiment")
    return {k: round_.get(k) for k in keys}


def run_pipeline(pipeline: Pipeline, *, every: float | None, watch_for: float, poll: float) -> dict[str, Any]:
    """One pass (every None): resume the open round, or open a new one, and advance it, watching its experiment
    up to `watch_for` seconds. With `every`: forever, a new round every `every` seconds once the last is done, the
    open one advanced every `poll` seconds."""
    if every is None:
        if pipeline.state["round"] is None or pipeline.state["round"]["step"] == "done":
            pipeline.open_round()
        deadline = pipeline.clock() + watch_for
        while pipeline.advance() != "done" and pipeline.clock() < deadline:
            time.sleep(poll)
        return dict(pipeline.state["round"])
    while True:
        round_ = pipeline.state["round"]
        if (round_ is None or round_["step"] == "done") and (
            pipeline.clock() - pipeline.state.get("last_round_started", 0.0) >= every
        ):
            pipeline.open_round()
        if pipeline.state["round"] is not None:
            pipeline.advance()
        time.sleep(poll)

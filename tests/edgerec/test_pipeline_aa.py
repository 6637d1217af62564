"""A/A runs in process: both arms the same model, the pipeline looks after every batch of traffic. The sequential
test it decides by finds a false winner (or loser) in at most alpha of the runs; the fixed-horizon test, peeked at
as often, in far more. And the schedule of `pipeline run --every`, in process."""

from __future__ import annotations

import numpy as np

from edgerec.cli.pipeline_rules import PROMOTE, STOP, Policy, look
from origin_sync.origin.analysis import build_report

EXPERIMENT = {
    "id": "aa",
    "variants": [{"name": "served", "weight": 500.0, "model": None}, {"name": "candidate", "weight": 500.0}],
}


def _report(counts: dict[str, tuple[int, int]]) -> dict:
    rows = [
        {"variant": v, "region": "GB", "impressions": n, "clicked": 0, "carted": 0, "converted": c}
        for v, (n, c) in counts.items()
    ]
    return build_report(EXPERIMENT, {"variants": rows, "revenue": [], "unattributed": {}})


def aa_run(rng: np.random.Generator, policy: Policy, looks: int, per_look: int, rate: float) -> tuple[bool, bool]:
    """(the pipeline decided on a difference at some look, the fixed-horizon p-value fell under alpha at some look)."""
    n = {"served": 0, "candidate": 0}
    c = {"served": 0, "candidate": 0}
    sequential_false, fixed_false = False, False
    for _ in range(looks):
        to_candidate = int(rng.binomial(per_look, 0.5))
        for variant, share in (("served", per_look - to_candidate), ("candidate", to_candidate)):
            n[variant] += share
            c[variant] += int(rng.binomial(share, rate))
        report = _report({v: (n[v], c[v]) for v in n})
        decision, outcome, evidence = look(report, 0, 0.0, policy)
        sequential_false |= decision == PROMOTE or (decision == STOP and outcome == "loss")
        p = evidence["fixed_horizon_p_value"]
        fixed_false |= p is not None and p < policy.alpha
    return sequential_false, fixed_false


def test_the_sequential_false_winner_rate_stays_under_alpha_when_peeked_at_every_look() -> None:
    policy = Policy(min_impressions=200, stage_impressions=10**9)
    runs, looks = 400, 20
    rng = np.random.default_rng(2026)
    outcomes = [aa_run(rng, policy, looks, per_look=500, rate=0.05) for _ in range(runs)]
    sequential = sum(s for s, _ in outcomes) / runs
    fixed = sum(f for _, f in outcomes) / runs
    assert sequential <= policy.alpha
    assert fixed > 2 * policy.alpha  # peeking at a fixed-horizon test: the inflation the sequential test avoids


def test_every_starts_a_round_only_when_due_and_the_last_one_is_done(monkeypatch) -> None:
    import pytest

    from edgerec.cli import pipeline as module

    class Clock:
        now = 1_000.0

    class Stub:
        """A pipeline whose rounds take one advance to finish."""

        clock = staticmethod(lambda: Clock.now)

        def __init__(self) -> None:
            self.state: dict = {"round": None, "rounds": []}
            self.opened: list[float] = []

        def open_round(self) -> None:
            self.opened.append(Clock.now)
            self.state |= {"round": {"step": "watch"}, "last_round_started": Clock.now}

        def advance(self) -> str:
            self.state["round"]["step"] = "done"
            return "done"

    class Stop(Exception):
        pass

    ticks = iter(range(30))

    def sleep(seconds: float) -> None:
        Clock.now += seconds
        if next(ticks) == 29:
            raise Stop

    monkeypatch.setattr(module.time, "sleep", sleep)
    stub = Stub()
    with pytest.raises(Stop):
        module.run_pipeline(stub, every=100.0, watch_for=0.0, poll=10.0)  # type: ignore[arg-type]
    assert stub.opened == [1_000.0, 1_100.0, 1_200.0]

"""A/A runs in process: both arms the same model, the pipeline looks after every batch of traffic. The sequential
test it decides by finds a false winner (or loser) in at most alpha of the runs; the fixed-horizon test, peeked at
as often, in far more. And the schedule of `pipeline run --every`, in process."""

from __future__ import annotations

import numpy as np

from benchmarks.loop_aa import aa_run
from edgerec.cli.pipeline_rules import Policy


def test_the_sequential_false_winner_rate_stays_under_alpha_when_peeked_at_every_look() -> None:
    policy = Policy(min_impressions=200, stage_impressions=10**9)
    runs, looks = 400, 20
    rng = np.random.default_rng(2026)
    outcomes = [aa_run(rng, policy, looks, per_look=500, rate=0.05) for _ in range(runs)]
    sequential = sum(s is not None for s, _ in outcomes) / runs
    fixed = sum(f is not None for _, f in outcomes) / runs
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

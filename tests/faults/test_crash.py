"""Crash anywhere: a refresh SIGKILLed at random points across its stages and publishing, started
again with the same run id until it completes, publishes what an uninterrupted run publishes."""

from __future__ import annotations

import random
from collections import Counter

from tasks.llm.loopback import LoopbackLLM
from tests.faults.crash import KILL_POINTS, compare, crash_config, kill_plan, reference_run, run_with_kills

SEED = 20240115


def test_killed_refresh_completes_with_the_uninterrupted_dataset(api_url, tmp_path):
    rng = random.Random(SEED)
    # three kills: one early (source/staging), one in generation, one while publishing
    targets = [rng.choice(KILL_POINTS[:4]), next(p for p in KILL_POINTS if p.name == "generate"),
               next(p for p in KILL_POINTS if p.name == "publish")]
    with LoopbackLLM(latency_s=0.1) as srv:
        embeddings = tmp_path / "embeddings.sqlite"
        reference = reference_run(crash_config(tmp_path / "ref.yaml", tmp_path / "ref-runs", srv, embeddings, 6, 24),
                                  tmp_path / "ref-runs", api_url, tmp_path)
        runs = tmp_path / "runs"
        outcome = run_with_kills(crash_config(tmp_path / "crash.yaml", runs, srv, embeddings, 6, 24), runs, "nightly",
                                 api_url, targets, tmp_path, rng)
    assert outcome.kills >= 2, outcome.attempts
    assert [a.target for a in outcome.attempts if a.killed][0] == targets[0].name
    result = compare(outcome.run_dir, reference)
    assert (result.lost, result.duplicated, result.different) == (0, 0, 0), result
    assert result.torn == []
    assert outcome.repeated_items == set(), f"items asked again after their answer was received: {outcome.repeated_items}"
    assert not (outcome.run_dir / ".running").exists()
    assert sum(a.new_calls for a in outcome.attempts) > 0


def test_kill_plan_covers_every_point_before_repeating_one():
    plan = kill_plan(random.Random(1), len(KILL_POINTS) + 3)
    uses = Counter(p.name for run in plan for p in run)
    assert set(uses) == {p.name for p in KILL_POINTS} and max(uses.values()) - min(uses.values()) <= 1
    assert all(run == sorted(run, key=KILL_POINTS.index) for run in plan)

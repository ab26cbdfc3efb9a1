"""Stages reused across runs: an unchanged refresh asks the teacher nothing and Prefect reports its
stages as cached; one changed config field re-runs that stage and what follows, nothing before it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tasks.llm.loopback import LoopbackLLM

KEY = "sk-test-PLANTED-stage-reuse-51c9"
BEFORE_SEEDS = ["simulate-ais", "ingest", "stage-positions", "compute-facts"]
FROM_SEEDS = ["build-seed-questions", "generate-examples", "validate-examples", "known", "judge", "dedup-semantic", "balance"]


def write_config(path: Path, runs: Path, srv: LoopbackLLM, max_seeds: int, cache_gb: float = 20.0) -> str:
    path.write_text(yaml.safe_dump({
        "run": {"runs_dir": str(runs), "stage_cache_max_gb": cache_gb},
        "simulate": {"vessels": 8, "hours": 12},
        "generate": {"max_seeds": max_seeds},
        "teacher": {
            "teachers": [
                {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
                 "api_key_env": "TW_REUSE_OPENAI_KEY", "share": 0.5, "concurrency": 2},
                {"name": "template", "kind": "template", "share": 0.5},
            ],
            "corrupt_share": 0.0,
        },
    }))
    return str(path)


def task_states(flow_run_id) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


@pytest.fixture(scope="module")
def three_runs(prefect_server, tmp_path_factory, monkeypatch_module):
    from flows.refresh import refresh

    monkeypatch_module.setenv("TW_REUSE_OPENAI_KEY", KEY)
    tmp = tmp_path_factory.mktemp("reuse")
    runs = tmp / "runs"
    out = {}
    with LoopbackLLM() as srv:
        # the last run keeps the stage cache to what it used itself (a limit of 1 kB)
        for run_id, max_seeds, cache_gb in (("first", 40, 20.0), ("second", 40, 20.0), ("changed", 30, 1e-6)):
            config = write_config(tmp / f"{run_id}.yaml", runs, srv, max_seeds, cache_gb)
            before = len(srv.requests)
            state = refresh(config=config, run_id=run_id, return_state=True)
            assert state.is_completed(), state
            run = runs / run_id
            cache = runs / "stage_cache"
            out[run_id] = {"requests": len(srv.requests) - before, "run": run,
                           "stats": json.loads((run / "stats.json").read_text()),
                           "states": task_states(state.state_details.flow_run_id),
                           # read after each run: the last run prunes what the first two stored
                           "cache_files": {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}}
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_an_unchanged_refresh_asks_the_teacher_nothing_and_reuses_every_stage_before_publishing(three_runs):
    first, second = three_runs["first"], three_runs["second"]
    assert first["requests"] > 0 and first["stats"]["generate"]["llm"]["calls"] > 0
    assert second["requests"] == 0
    # what this run paid: nothing (the examples still cost what the first run paid to make them)
    llm = second["stats"]["generate"]["llm"]
    assert (llm["calls"], llm["cost_usd"]) == (0, 0.0) and llm["item_cost_usd"] == first["stats"]["generate"]["llm"]["item_cost_usd"] > 0
    reused = {name for name, r in second["stats"]["stages"].items() if r["reused"] and not name.endswith("of1")}
    # dedup and balance compare against the version the first run published, so they run again
    assert reused == set(BEFORE_SEEDS + FROM_SEEDS) - {"dedup-semantic", "balance"}
    assert all(r["from_run"] == "first" for name, r in second["stats"]["stages"].items() if name in reused)
    assert not any(r["reused"] for r in first["stats"]["stages"].values())
    # Prefect's own record: the reused stages are Cached task runs
    # generation ran as one task per teacher batch (tasks/fanout.py), each reused on its own
    batches = sorted(n for n in second["states"] if n.startswith("generate-"))
    assert batches == ["generate-gpt-1of1", "generate-template-1of1"]
    assert second["stats"]["stages"]["generate-examples"]["note"] == "2 of 2 tasks reused"
    for name in reused - {"generate-examples"} | set(batches):
        assert second["states"][name] == "Cached", (name, second["states"])
    assert first["states"]["generate-gpt-1of1"] == "Completed"
    assert "Stages reused from earlier runs" in (second["run"] / "report.md").read_text()


def test_a_reused_stage_leaves_the_same_files_in_the_new_run_folder(three_runs):
    first, second = three_runs["first"]["run"], three_runs["second"]["run"]
    # the ledger is what a run asked: the second asked nothing
    assert (first / "work" / "teacher_ledger.jsonl").stat().st_size > 0
    assert not (second / "work" / "teacher_ledger.jsonl").exists()
    for rel in ("work/seeds.jsonl", "work/generated.jsonl", "work/validated.jsonl",
                "facts/vessel_movement.parquet", "staged/quarantine_positions.parquet", "source/ais.csv"):
        assert (second / rel).read_bytes() == (first / rel).read_bytes(), rel
    # paths in the reused results point into the new run folder, not the first one
    stats = three_runs["second"]["stats"]
    assert stats["stage"]["store_dir"] == str(second / "store")
    assert all(path.startswith(str(second)) for path in stats["ingest"]["files"])
    # both runs publish the same examples (the second carries the first version forward)
    cols = ["id", "question", "answer"]
    a = pd.read_parquet(first / "dataset" / "examples.parquet")[cols].sort_values("id").reset_index(drop=True)
    b = pd.read_parquet(second / "dataset" / "examples.parquet")[cols].sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_one_changed_field_reruns_that_stage_and_what_follows_only(three_runs):
    changed = three_runs["changed"]
    stages = changed["stats"]["stages"]
    assert [name for name in BEFORE_SEEDS if stages[name]["reused"]] == BEFORE_SEEDS
    assert [name for name in FROM_SEEDS if not stages[name]["reused"]] == FROM_SEEDS
    assert changed["stats"]["seeds"]["seeds"] <= 30
    for name in FROM_SEEDS:
        if name != "generate-examples":
            assert changed["states"][name] == "Completed", (name, changed["states"])


def test_the_stage_cache_is_pruned_to_what_the_last_run_used(three_runs):
    assert three_runs["second"]["stats"]["stage_cache"]["entries_removed"] == 0  # 20 GB: nothing to prune
    pruned = three_runs["changed"]["stats"]["stage_cache"]
    assert pruned["entries_removed"] > 0 and pruned["bytes_after"] > 1000  # over the limit: what it used stays
    cache = three_runs["first"]["run"].parent / "stage_cache"
    assert pruned["bytes_after"] == sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    # the entries only the first two runs used (seeds and generation for 40 seeds) are gone: their
    # keys are no longer in the cache, those of the changed run are
    keys = {p.name for p in (cache / "keys").iterdir()}
    changed_keys = {r["key"] for r in three_runs["changed"]["stats"]["stages"].values() if r.get("key")}
    first_only = {r["key"] for r in three_runs["first"]["stats"]["stages"].values() if r.get("key")} - changed_keys
    assert first_only and not (first_only & keys) and changed_keys <= keys


def test_the_key_never_reaches_the_stage_cache(three_runs):
    for run in three_runs.values():
        assert run["cache_files"]
        for path, data in run["cache_files"].items():
            assert KEY.encode() not in data, path

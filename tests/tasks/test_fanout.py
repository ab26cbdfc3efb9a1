"""Generation fanned out over teacher batches (tasks/fanout.py + flows/refresh.generate_in_batches):
the merged output equals one unbatched call, every batch is its own Prefect task, a teacher's batches
never overlap in time, and a teacher that answers nothing leaves the other teachers' examples."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow

from tasks.config import GenerateConfig, TeacherConfig
from tasks.errors import TeacherError
from tasks.fanout import merge_generation_stats, teacher_batches
from tasks.llm.loopback import LoopbackLLM
from tasks.seeds import build_seeds
from tasks.teacher import generate_examples
from tests.tasks.factories import small_pipeline

KEY = "sk-test-PLANTED-fanout-3e1d"


@pytest.fixture(scope="module")
def seeds_path(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fan")
    staged, facts = small_pipeline(tmp, seed=3, vessels=12, hours=12)
    build_seeds(staged.positions_path, facts.paths, facts.params, facts.digests, None,
                GenerateConfig(max_seeds=60), tmp / "seeds.jsonl")
    return tmp / "seeds.jsonl"


def teachers(srv: LoopbackLLM, batch_size: int, **extra) -> TeacherConfig:
    return TeacherConfig.model_validate({
        "teachers": [
            {"name": "template", "kind": "template", "share": 0.4},
            {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
             "api_key_env": "TW_FANOUT_KEY", "share": 0.6, "concurrency": 2},
        ],
        "corrupt_share": 0.1, "backoff_base_s": 0.01, "max_retries": 1, "batch_size": batch_size, **extra,
    })


@flow
def generate_flow(seeds: str, work: str, cfg_json: str) -> dict:
    from flows.refresh import generate_in_batches
    from tasks.stagecache import StageRunner

    work_dir = Path(work) / "run" / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "seeds.jsonl").write_bytes(Path(seeds).read_bytes())
    cfg = type("Cfg", (), {"teacher": TeacherConfig.model_validate_json(cfg_json), "generate": GenerateConfig(seed=11)})
    stages = StageRunner(work_dir.parent, Path(work) / "stage_cache")
    stats = generate_in_batches(stages, cfg, work_dir, Path(work) / "cache.sqlite", False)
    return {"stats": stats, "stages": stages.summary()}


def test_batches_per_teacher_merge_to_the_unbatched_result(prefect_server, seeds_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TW_FANOUT_KEY", KEY)
    with LoopbackLLM(latency_s=0.02) as srv:
        cfg = teachers(srv, batch_size=15)
        one = generate_examples(seeds_path, cfg, 11, tmp_path / "one.jsonl", tmp_path / "one.sqlite",
                                tmp_path / "one_ledger.jsonl", tmp_path / "one_q.parquet")
        out = generate_flow(str(seeds_path), str(tmp_path), cfg.model_dump_json())
        ledger = [json.loads(line) for line in open(tmp_path / "run" / "work" / "teacher_ledger.jsonl")]
    work = tmp_path / "run" / "work"
    assert (work / "generated.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    stats = out["stats"]
    for k in ("seeds", "generated", "rejected", "per_teacher", "planted_errors", "teacher"):
        assert stats[k] == one[k], k
    for k in ("items", "accepted", "calls", "input_tokens", "output_tokens"):
        assert stats["llm"][k] == one["llm"][k], k
    assert stats["llm"]["cost_usd"] == pytest.approx(one["llm"]["cost_usd"])
    names = sorted(n for n in out["stages"] if n.startswith("generate-") and n != "generate-examples")
    n_gpt = -(-one["llm"]["items"] // 15)  # every seed of gpt is an LLM item
    assert [n for n in names if n.startswith("generate-gpt-")] == [f"generate-gpt-{k}of{n_gpt}" for k in range(1, n_gpt + 1)]
    assert any(n.startswith("generate-template-") for n in names) and stats["batches"] == len(names)
    assert len(ledger) == len([json.loads(line) for line in open(tmp_path / "one_ledger.jsonl")])
    # one teacher's batches run one after another (its rate limits hold per call): their ledger
    # lines do not interleave in time
    batch_of = {}
    for k in range(1, n_gpt + 1):
        for line in (work / "generate" / f"gpt-{k}of{n_gpt}.seeds.jsonl").read_text().splitlines():
            batch_of[json.loads(line)["seed_id"]] = k
    spans: dict[int, list[str]] = {}
    for line in ledger:
        spans.setdefault(batch_of[line["item_id"]], []).append(line["ts"])
    assert n_gpt > 1 and len(spans) == n_gpt
    for k in range(1, n_gpt):
        assert max(spans[k]) <= min(spans[k + 1]), k


def test_a_teacher_that_answers_nothing_leaves_the_other_teachers_examples(prefect_server, seeds_path, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("TW_FANOUT_KEY", KEY)
    with LoopbackLLM(faults=lambda n, r: "garbage_body") as srv:
        cfg = teachers(srv, batch_size=100, max_consecutive_failures=3)
        out = generate_flow(str(seeds_path), str(tmp_path), cfg.model_dump_json())
    stats = out["stats"]
    assert stats["per_teacher"] == {"template": stats["generated"]} and stats["generated"] > 0
    quarantine = pd.read_parquet(tmp_path / "run" / "work" / "quarantine_generate.parquet")
    assert stats["generated"] + len(quarantine) == stats["seeds"]
    assert stats["llm"]["accepted"] == 0 and stats["llm"]["calls"] > 0  # the failing teacher was asked, and failed


def test_no_teacher_producing_anything_fails_the_run(prefect_server, seeds_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TW_FANOUT_KEY", KEY)
    with LoopbackLLM(faults=lambda n, r: "garbage_body") as srv:
        cfg = teachers(srv, batch_size=100, max_consecutive_failures=3).model_copy(update={})
        only_gpt = TeacherConfig.model_validate({**cfg.model_dump(), "teachers": [
            {**cfg.teachers[1].model_dump(), "share": 1.0}]})
        with pytest.raises(TeacherError, match="no teacher produced any example"):
            generate_flow(str(seeds_path), str(tmp_path), only_gpt.model_dump_json())


def test_a_budget_keeps_generation_in_one_batch(seeds_path, tmp_path):
    cfg = TeacherConfig.model_validate({"teachers": [{"name": "template", "kind": "template"}], "batch_size": 5,
                                        "budget_usd": 1.0})
    assert [b.name for b in teacher_batches(seeds_path, cfg, 11, tmp_path)] == ["all-1of1"]
    cfg = cfg.model_copy(update={"budget_usd": None})
    batches = teacher_batches(seeds_path, cfg, 11, tmp_path)
    assert [b.seeds for b in batches][:-1] == [5] * (len(batches) - 1) and sum(b.seeds for b in batches) == 60


def test_merged_stats_add_up_and_recompute_ratios():
    a = {"seeds": 2, "generated": 1, "rejected": 1, "per_teacher": {"gpt": 1}, "planted_errors": 0,
         "llm": {"items": 2, "accepted": 1, "calls": 3, "cost_usd": 0.5, "item_cost_usd": 0.5, "stopped": None,
                 "cost_per_accepted_usd": 0.5, "per_teacher": {"gpt": {"final_concurrency": 4, "calls": 3}}}}
    b = {"seeds": 3, "generated": 3, "rejected": 0, "per_teacher": {"gpt": 3}, "planted_errors": 1,
         "llm": {"items": 3, "accepted": 3, "calls": 3, "cost_usd": 0.25, "item_cost_usd": 0.25, "stopped": "budget",
                 "cost_per_accepted_usd": 0.0833, "per_teacher": {"gpt": {"final_concurrency": 2, "calls": 3}}}}
    m = merge_generation_stats([a, b])
    assert (m["seeds"], m["generated"], m["rejected"], m["planted_errors"], m["teacher"]) == (5, 4, 1, 1, "gpt (4)")
    assert m["llm"]["cost_per_accepted_usd"] == round(0.75 / 4, 6) and m["llm"]["stopped"] == "budget"
    assert m["llm"]["per_teacher"]["gpt"] == {"final_concurrency": 2, "calls": 6}

"""The end-to-end flow (refresh -> train -> evaluate) on a real test-harness Prefect server, small simulated set."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

CONFIG = str(REPO / "pipeline_configs" / "maritime_ais.yaml")


def small_overrides(runs_dir) -> dict:
    return {
        "run.runs_dir": str(runs_dir),
        "simulate.vessels": 10,
        "simulate.hours": 12,
        "generate.max_seeds": 150,
        "train.max_steps": 8,
        "evaluate.limit": 8,
    }


@pytest.fixture(scope="module")
def refreshed(prefect_server, tmp_path_factory):
    from flows.end_to_end import end_to_end

    runs = tmp_path_factory.mktemp("runs")
    run_dir = end_to_end(config=CONFIG, overrides=small_overrides(runs), run_id="flowtest")
    return runs, run_dir


def test_refresh_publishes_the_dataset_files(refreshed):
    runs, run_dir = refreshed
    assert run_dir.endswith("flowtest")
    assert (runs / "latest").resolve().name == "flowtest"
    for rel in ("dataset/train.jsonl", "dataset/eval.jsonl", "dataset/examples.parquet", "dataset/quarantine.parquet",
                "dataset/manifest.json", "report.md", "stats.json", "config.yaml", "source/ais.csv",
                "source/ground_truth_port_calls.csv", "facts/vessel_movement.parquet", "facts/port_calls.parquet"):
        assert (runs / "flowtest" / rel).is_file(), rel
    # simulated runs keep their day-partitioned store in the run folder
    assert list((runs / "flowtest" / "store" / "positions").glob("date=*/data.parquet"))


def test_counts_add_up_and_nothing_is_lost(refreshed):
    runs, _ = refreshed
    run = runs / "flowtest"
    stats = json.loads((run / "stats.json").read_text())
    quarantine = pd.read_parquet(run / "dataset" / "quarantine.parquet")
    examples = pd.read_parquet(run / "dataset" / "examples.parquet")
    generated = stats["generate"]["generated"]
    by_stage = quarantine["stage"].value_counts().to_dict()
    assert generated == len(examples) + by_stage.get("validate", 0) + by_stage.get("dedup", 0)
    assert stats["ingest"]["rows"] == stats["stage"]["kept"] + by_stage["stage"] + by_stage.get("ingest", 0)
    assert "(balanced)" in (run / "report.md").read_text()
    # the simulator's dirty rows reach quarantine with reasons
    assert {"invalid_mmsi", "duplicate_row"} <= set(quarantine.loc[quarantine.stage == "stage", "reason"])
    assert stats["validate"]["planted_errors_caught"] == stats["validate"]["planted_errors"] > 0


def test_examples_are_grounded_chat_rows_split_by_vessel(refreshed):
    runs, _ = refreshed
    dataset = runs / "flowtest" / "dataset"
    train = [json.loads(line) for line in open(dataset / "train.jsonl")]
    evals = [json.loads(line) for line in open(dataset / "eval.jsonl")]
    assert train and evals
    assert not {r["mmsi"] for r in train if r["mmsi"]} & {r["mmsi"] for r in evals if r["mmsi"]}  # 0: area questions
    assert {r["category"] for r in train + evals} >= {"movement", "port_activity"}
    assert any(not r["answerable"] for r in train + evals)
    assert any(len(r["messages"]) > 3 for r in train + evals)  # multi-turn dialogues
    for row in train[:40]:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system" and roles[1::2] == ["user"] * (len(roles) // 2) and roles[2::2] == ["assistant"] * (len(roles) // 2)
        assert "\n\nQuestion: " in row["messages"][1]["content"]
    examples = pd.read_parquet(dataset / "examples.parquet")
    assert examples["fact_sql"].map(lambda f: (REPO / f).is_file()).all()
    assert examples["source_hash"].str.fullmatch(r"[0-9a-f]{32}").all()


def test_facts_can_be_rerun_from_provenance(refreshed):
    """An example's fact is reproducible: re-run its SQL file with its params over the staged rows."""
    import duckdb

    from tasks.sqlfiles import run_sql

    runs, _ = refreshed
    run = runs / "flowtest"
    ex = pd.read_parquet(run / "dataset" / "examples.parquet")
    row = ex[(ex.fact_sql == "sql/vessel_movement.sql") & ex.answerable].iloc[0]
    con = duckdb.connect(str(run / "warehouse.duckdb"), read_only=True)
    facts = run_sql(con, "vessel_movement", json.loads(row.fact_params)).df()
    again = facts[(facts.mmsi == row.mmsi) & (facts.window_start == pd.Timestamp(row.window_start))].iloc[0]
    assert again.source_hash == row.source_hash
    assert again.mean_sog_kn == pytest.approx(json.loads(row.fact)["mean_sog_kn"])


def test_student_is_trained_and_scored_base_vs_tuned(refreshed):
    runs, _ = refreshed
    run = runs / "flowtest"
    results = json.loads((run / "eval" / "results.json").read_text())
    for model in ("base", "tuned"):
        assert results[model]["n"] == 8
        assert 0.0 <= results[model]["exact_match"] <= 1.0 and 0.0 <= results[model]["token_f1"] <= 1.0
    stats = json.loads((run / "stats.json").read_text())
    assert (Path(stats["train"]["adapter_dir"]) / "adapter_config.json").is_file()
    assert stats["train"]["steps"] == 8 and stats["train"]["method"] == "lora"  # no CUDA here
    report = (run / "report.md").read_text()
    assert "## Training" in report and "## Evaluation (lm-eval)" in report

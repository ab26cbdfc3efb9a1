"""The end-to-end flow (refresh -> train -> evaluate) on a real test-harness Prefect server, small simulated set."""

from __future__ import annotations

import json
import re
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
        "gate.first_n": 40,
        "gate.max_steps": 6,
        "gate.margin": -1.0,  # the gate runs and reports, but a few steps of a random tiny model must not stop the test run
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
    gate = sum(by_stage.get(s, 0) for s in ("validate", "judge", "known", "dedup", "balance", "split"))
    assert generated == len(examples) + gate
    assert stats["publish"]["carried"] == 0 and stats["publish"]["added"] == len(examples)
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
    # scores per category for base and tuned, in results.json and in the report, with a plot
    categories = set(results["base"]["per_category"])
    assert categories and set(results["tuned"]["per_category"]) == categories
    per_category = report.split("Per category:", 1)[1].split("Per difficulty:", 1)[0]
    assert "base token_f1" in per_category and "tuned token_f1" in per_category
    assert all(f"| {category} |" in per_category for category in categories)
    assert (run / "plots" / "eval_scores.png").stat().st_size > 0 and "plots/eval_scores.png" in report
    # the offline template teacher has no endpoint: said, not silently skipped
    assert "teacher" not in results and "template teacher" in results["teacher_note"]
    # the gate ran on the first examples and let the full run go ahead
    gate = stats["gate"]
    assert gate["passed"] and gate["first_n"] == 40 and gate["steps"] == 6 and gate["examples"] <= 40
    assert "## Incremental gate" in report
    # cost per 1,000 queries: gpt-4o list prices (no API calls offline) against the measured student
    cost = results["cost"]
    assert cost["teacher_usd_per_1k"] > 0 and cost["student_usd_per_1k"] > 0
    assert cost["ratio"] == pytest.approx(cost["teacher_usd_per_1k"] / cost["student_usd_per_1k"], abs=0.05)
    assert "## Cost per 1,000 queries" in report and "gpt-4o list prices" in report


def test_a_gate_the_tuned_student_cannot_pass_stops_before_the_full_run(refreshed, tmp_path):
    import shutil

    from flows.train_eval import train_evaluate

    runs, _ = refreshed
    run = tmp_path / "gated"
    shutil.copytree(runs / "flowtest", run, symlinks=True, ignore=shutil.ignore_patterns("student", "eval", "plots"))
    overrides = small_overrides(runs) | {"gate.margin": 1.0}  # tuned must gain a whole point: impossible
    result = train_evaluate(config=CONFIG, overrides=overrides, run_dir=str(run))

    assert result["stopped_at_gate"] and not result["gate"]["passed"]
    assert not (run / "eval" / "results.json").exists()
    assert not list((run / "student").glob("lora-*")), "the full dataset must not be trained"
    assert list((run / "student").glob("gate-*/adapter"))
    stats = json.loads((run / "stats.json").read_text())
    assert stats["gate"]["passed"] is False
    failed = stats["gate"]["failed_categories"]
    assert failed and set(failed) <= set(stats["gate"]["gain_per_category"])
    report = (run / "report.md").read_text()
    assert "**stopped**" in report and f"Categories that failed: {', '.join(failed)}." in report
    # the command line says so, and exits 3 instead of 0
    from flows.cli import stopped_at_gate, summary

    assert stopped_at_gate(run) and "STOPPED before the full run; failed categories: " + ", ".join(failed) in summary(run)
    assert not stopped_at_gate(runs / "flowtest")

    # the same folder again with the gate off: the stop is gone, the full run's figures are there
    train_evaluate(config=CONFIG, overrides=small_overrides(runs) | {"gate.enabled": False}, run_dir=str(run))
    stats = json.loads((run / "stats.json").read_text())
    assert "gate" not in stats and stats["train"]["steps"] == 8 and not stopped_at_gate(run)
    assert (run / "eval" / "results.json").is_file() and "## Incremental gate" not in (run / "report.md").read_text()


@pytest.fixture(scope="module")
def second_night(refreshed):
    """The nightly refresh again over the same simulated day, into the same runs folder."""
    from flows.refresh import refresh

    runs, _ = refreshed
    return Path(refresh(config=CONFIG, overrides=small_overrides(runs), run_id="flowtest-2"))


def test_a_second_run_on_the_same_data_publishes_no_near_copies(refreshed, second_night):
    from tasks.config import DedupConfig
    from tasks.dedup import dedup_text, embed_texts, nearest_cosine

    runs, _ = refreshed
    first = pd.read_parquet(runs / "flowtest" / "dataset" / "examples.parquet")
    second = pd.read_parquet(second_night / "dataset" / "examples.parquet")
    stats = json.loads((second_night / "stats.json").read_text())
    manifest = json.loads((second_night / "dataset" / "manifest.json").read_text())
    # the same day again: every example is a repeat of the published version, none is added
    assert stats["publish"]["added"] == 0 and stats["publish"]["carried"] == len(first) > 0
    # a simulation is a dataset line of its own (its config's hash): the same simulated day, the same line
    assert manifest["version"]["parent"] == "flowtest" and manifest["version"]["lineage"].startswith("maritime_ais-sim-")
    assert stats["dedup"]["published_duplicates"] == stats["dedup"]["input"] > 0
    # the version is the first one, each example on the side it was published on
    pd.testing.assert_frame_equal(second.sort_values("id")[["id", "split", "question", "answer"]].reset_index(drop=True),
                                  first.sort_values("id")[["id", "split", "question", "answer"]].reset_index(drop=True))
    cfg = DedupConfig()
    vectors, _ = embed_texts([dedup_text(r) for r in second.to_dict("records")], cfg)
    assert float(nearest_cosine(vectors).max()) < cfg.threshold
    q = pd.read_parquet(second_night / "dataset" / "quarantine.parquet")
    assert set(q.loc[q.stage == "dedup", "reason"]) <= {"published_duplicate", "near_published"}
    assert "Check: " in (second_night / "report.md").read_text() and "(balanced)" in (second_night / "report.md").read_text()


def test_report_has_the_quality_gate_plots_and_a_prefect_artifact(refreshed):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    runs, _ = refreshed
    run = runs / "flowtest"
    report = (run / "report.md").read_text()
    assert "## Quality gate" in report
    for name in ("funnel", "distribution", "similarity"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plots/{name}.png" in report

    from flows.refresh import artifact_key

    lineage = json.loads((run / "dataset" / "manifest.json").read_text())["version"]["lineage"]

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(lineage)])))

    found = [a.data or "" for a in asyncio.run(artifacts())]
    assert any("## Quality gate" in d and str(run / "plots" / "funnel.png") in d for d in found)


def test_the_ui_gets_tables_for_the_funnel_scores_and_cost_and_a_link_to_the_run_folder(refreshed):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.refresh import artifact_key
    from tasks.report import gate_steps

    runs, _ = refreshed
    run = runs / "flowtest"
    lineage = json.loads((run / "dataset" / "manifest.json").read_text())["version"]["lineage"]
    wanted = {name: artifact_key(lineage, name) for name in ("funnel", "run-folder", "evaluation")}
    wanted |= {f"evaluation-{part}": f"{wanted['evaluation']}-{part}" for part in ("scores", "per-category", "cost")}

    async def latest(keys):
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys))))
        # the second night's run writes the same keys (one key per dataset line): take this run's
        mine = re.compile(rf"\b{re.escape(run.name)}\b(?!-)")
        return {artifact.key: artifact for artifact in sorted(found, key=lambda a: a.created)
                if mine.search(artifact.description or "")}

    artifacts = asyncio.run(latest(wanted.values()))
    assert set(artifacts) == set(wanted.values())
    stats = json.loads((run / "stats.json").read_text())
    funnel = json.loads(artifacts[wanted["funnel"]].data)
    assert [(row["step"], row["examples left"]) for row in funnel] == [(s, n) for s, n, _ in gate_steps(stats)]
    assert funnel[-1]["examples left"] == stats["publish"]["published"]
    assert run.resolve().as_uri() in artifacts[wanted["run-folder"]].data  # Prefect stores a link as markdown
    results = json.loads((run / "eval" / "results.json").read_text())
    scores = {row["model"]: row for row in json.loads(artifacts[wanted["evaluation-scores"]].data)}
    assert scores["tuned"]["token_f1"] == results["tuned"]["token_f1"] and set(scores) == {"base", "tuned"}
    categories = [row["category"] for row in json.loads(artifacts[wanted["evaluation-per-category"]].data)]
    assert categories == sorted(results["base"]["per_category"])
    cost = json.loads(artifacts[wanted["evaluation-cost"]].data)
    assert [row["usd_per_1k_queries"] for row in cost] == [results["cost"]["teacher_usd_per_1k"], results["cost"]["student_usd_per_1k"]]

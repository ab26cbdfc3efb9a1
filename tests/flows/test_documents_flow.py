"""The second domain end to end: pipeline_configs/maritime_ops.yaml (the project's own corpus of
procedures, a PDF among them) through refresh, then train + evaluate with the tiny student, on the
session's Prefect test server; then a second refresh over the same corpus re-chunks nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import REPO

CONFIG = str(REPO / "pipeline_configs" / "maritime_ops.yaml")


def small_overrides(runs_dir) -> dict:
    return {
        "run.runs_dir": str(runs_dir),
        "documents.max_seeds": 80,
        "train.max_steps": 6,
        "gate.first_n": 30,
        "gate.max_steps": 4,
        "gate.margin": -1.0,  # the gate runs and reports; a few steps of a random tiny model must not stop the test
        "evaluate.limit": 6,
    }


@pytest.fixture(scope="module")
def documents_run(prefect_server, tmp_path_factory):
    from flows.end_to_end import end_to_end

    runs = tmp_path_factory.mktemp("runs")
    end_to_end(config=CONFIG, overrides=small_overrides(runs), run_id="docs")
    return runs, runs / "docs"


def test_documents_run_publishes_cited_examples(documents_run):
    runs, run = documents_run
    for rel in ("dataset/train.jsonl", "dataset/eval.jsonl", "dataset/examples.parquet", "dataset/quarantine.parquet",
                "dataset/manifest.json", "documents/sections.jsonl", "documents/chunks.jsonl", "report.md",
                "review/review_sample.csv"):
        assert (run / rel).is_file(), rel
    examples = pd.read_parquet(run / "dataset" / "examples.parquet")
    assert len(examples) >= 40
    assert set(examples["category"]) == {"qa", "compliance", "summary", "which_section"}
    assert {"insufficient_information", "human_review", "out_of_scope"} <= set(examples["unanswerable_kind"].dropna())
    assert (examples["turns"] > 1).any()
    # every example stores its source file, section id and span
    for row in examples.itertuples():
        cited = [g for g in json.loads(row.grounding) if g["kind"] == "citation"]
        assert all(g["source_file"] == row.source_file and g["section_id"] == row.section_id and len(g["span"]) == 2
                   for g in cited)
    assert examples["source_file"].str.endswith(".pdf").any()
    # no section on both sides
    assert (examples.groupby(["source_file", "section_id"])["split"].nunique() == 1).all()
    assert set(examples["split"]) == {"train", "eval"}


def test_counts_add_up_and_the_gate_caught_the_planted_errors(documents_run):
    _, run = documents_run
    stats = json.loads((run / "stats.json").read_text())
    quarantine = pd.read_parquet(run / "dataset" / "quarantine.parquet")
    examples = pd.read_parquet(run / "dataset" / "examples.parquet")
    by_stage = quarantine["stage"].value_counts().to_dict()
    gate = sum(by_stage.get(s, 0) for s in ("validate", "judge", "known", "dedup", "balance", "split"))
    assert stats["generate"]["generated"] == len(examples) + gate
    assert stats["validate"]["planted_errors_caught"] == stats["validate"]["planted_errors"] > 0
    assert stats["documents"]["files"] == 5 and stats["documents"]["sections"] > 30
    report = (run / "report.md").read_text()
    assert "(balanced)" in report and "edge cases" in report and "## Quality gate" in report
    shares = stats["seeds"]["shares"]
    assert shares["kind"]["unanswerable"]["within_tolerance"] and shares["kind"]["unanswerable"]["target"] == 0.2


def test_student_is_trained_and_scored_on_document_answers(documents_run):
    _, run = documents_run
    results = json.loads((run / "eval" / "results.json").read_text())
    for side in ("base", "tuned"):
        assert results[side]["n"] == 6
        assert 0.0 <= results[side]["token_f1"] <= 1.0
    assert "citation_match" in results["metrics"]
    report = (run / "report.md").read_text()
    assert "## Training" in report and "## Evaluation (lm-eval)" in report


def test_a_second_refresh_rechunks_nothing_and_adds_nothing(documents_run):
    from flows.refresh import refresh

    runs, _ = documents_run
    refresh(config=CONFIG, overrides=small_overrides(runs), run_id="docs-again")
    stats = json.loads((runs / "docs-again" / "stats.json").read_text())
    assert stats["documents"]["rechunked"] == [] and len(stats["documents"]["reused"]) == 5
    assert stats["publish"]["added"] == 0 and stats["publish"]["carried"] == stats["publish"]["published"] > 0

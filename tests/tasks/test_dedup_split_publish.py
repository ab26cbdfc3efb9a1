"""Semantic dedup with the real MiniLM model + FAISS, MMSI splits, and atomic publishing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.config import DedupConfig, SplitConfig
from tasks.dedup import dedup_examples
from tasks.publish import publish_dataset
from tasks.errors import InputError
from tasks.split import assign_splits
from tasks.artifacts import write_jsonl
from tests.tasks.factories import example, movement_seed, port_seed


def _ex(id_, question, answer, mmsi=366000001):
    ex = example(movement_seed(mmsi=mmsi))
    ex.update(id=id_, question=question, answer=answer, mmsi=mmsi)
    return ex


def test_exact_and_near_duplicates_are_quarantined_deterministically(tmp_path):
    rows = [
        _ex("b", "What was the average speed of vessel 366000001 between 06:00 and 07:00 UTC?", "It averaged 12.3 knots."),
        _ex("a", "what was the average speed of vessel 366000001 between 06:00 and 07:00 UTC?", "It averaged  12.3 knots."),
        _ex("c", "What was the average speed of vessel 366000001 between 06:00 and 07:00 UTC ?", "It averaged 12.3 knots!"),
        _ex("d", "At which port did the tanker stop and when did it arrive?", "It arrived at Long Beach at 07:42 UTC."),
        _ex("e", "How far did the fishing vessel travel during the night?", "It covered 40.2 nautical miles."),
    ]
    write_jsonl(rows, tmp_path / "in.jsonl")
    stats = dedup_examples(tmp_path / "in.jsonl", DedupConfig(threshold=0.97), tmp_path / "out.jsonl", tmp_path / "q.parquet")
    kept = [json.loads(line)["id"] for line in open(tmp_path / "out.jsonl")]
    quarantine = pd.read_parquet(tmp_path / "q.parquet")
    assert kept == ["a", "d", "e"]  # the smallest id of each group survives
    assert stats["exact_duplicates"] == 1 and stats["near_duplicates"] == 1
    assert dict(zip(quarantine.record_id, quarantine.reason)) == {"b": "exact_duplicate", "c": "near_duplicate"}
    assert len(kept) + len(quarantine) == len(rows)


def test_split_keeps_each_vessel_on_one_side():
    examples = [{"mmsi": 366000000 + (i % 400)} for i in range(2000)]
    splits = assign_splits(examples, SplitConfig(eval_share=0.2, seed=0))
    assert len(splits) == 400 and 50 <= sum(v == "eval" for v in splits.values()) <= 110
    assert splits == assign_splits(examples, SplitConfig(eval_share=0.2, seed=0))
    assert splits != assign_splits(examples, SplitConfig(eval_share=0.2, seed=1))
    # a later refresh with more vessels keeps the earlier vessels where they were
    more = assign_splits(examples + [{"mmsi": 367000000 + i} for i in range(100)], SplitConfig(eval_share=0.2))
    assert all(more[m] == side for m, side in splits.items())


def test_split_needs_two_vessels_and_fills_both_sides():
    with pytest.raises(InputError, match="needs at least 2"):
        assign_splits([{"mmsi": 366000001}], SplitConfig())
    two = assign_splits([{"mmsi": 366000001}, {"mmsi": 366000002}], SplitConfig(eval_share=0.01))
    assert sorted(two.values()) == ["eval", "train"]


def test_publish_writes_dataset_atomically(tmp_path):
    rows = [example(movement_seed(mmsi=366000000 + i, hour=i % 20)) for i in range(10)]
    rows += [example(port_seed("arrival", mmsi=366000000 + i)) for i in range(10)]
    for i, r in enumerate(rows):
        r["id"] = f"id{i:02d}"
    write_jsonl(rows, tmp_path / "deduped.jsonl")
    pd.DataFrame([{"stage": "validate", "reason": "ungrounded_number", "record_id": "x", "mmsi": "1", "payload": "{}"}]).to_parquet(tmp_path / "q.parquet")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "stale.txt").write_text("old version")
    stats = publish_dataset(tmp_path / "deduped.jsonl", [tmp_path / "q.parquet", tmp_path / "missing.parquet"],
                            SplitConfig(eval_share=0.3), dataset)
    names = sorted(p.name for p in dataset.iterdir())
    assert names == ["eval.jsonl", "examples.parquet", "manifest.json", "quarantine.parquet", "train.jsonl"]
    assert not list(tmp_path.glob("dataset.*"))  # no partial or old copies left
    train = [json.loads(line) for line in open(dataset / "train.jsonl")]
    evals = [json.loads(line) for line in open(dataset / "eval.jsonl")]
    assert len(train) + len(evals) == 20 == stats["published"]
    assert not {r["mmsi"] for r in train} & {r["mmsi"] for r in evals}
    assert all(r["messages"][-1]["role"] == "assistant" for r in train + evals)
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["quarantine"] == {"validate/ungrounded_number": 1}
    examples = pd.read_parquet(dataset / "examples.parquet")
    assert {"fact_sql", "fact_params", "source_hash", "teacher", "generation_seed", "split"} <= set(examples.columns)

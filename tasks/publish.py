"""Publish: split by MMSI and write the dataset folder atomically (a reader never sees half of it)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.config import SplitConfig
from tasks.split import assign_splits, split_key
from tasks.artifacts import QUARANTINE_COLUMNS, read_jsonl, replace_dir, write_jsonl

# what a trainer and lm-eval read; the full provenance stays in examples.parquet
TRAIN_FIELDS = ("id", "messages", "category", "difficulty", "form", "answerable", "mmsi", "fact", "grounding")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def publish_dataset(
    deduped_path: Path, quarantine_paths: list[Path], cfg: SplitConfig, dataset_dir: Path
) -> dict[str, Any]:
    dataset_dir = Path(dataset_dir)
    staging = dataset_dir.with_name(dataset_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)

    examples = read_jsonl(deduped_path)
    splits = assign_splits(examples, cfg)
    for ex in examples:
        ex["split"] = splits[split_key(ex)]
    for split in ("train", "eval"):
        rows = [{k: ex[k] for k in TRAIN_FIELDS} for ex in examples if ex["split"] == split]
        write_jsonl(rows, staging / f"{split}.jsonl")
    frame = pd.DataFrame(examples)
    if len(frame):
        frame["messages"] = frame["messages"].map(json.dumps)
    frame.to_parquet(staging / "examples.parquet", index=False)

    quarantine = pd.concat(
        [pd.read_parquet(p) for p in quarantine_paths if Path(p).exists()] or [pd.DataFrame(columns=list(QUARANTINE_COLUMNS))],
        ignore_index=True,
    ).astype("string")
    quarantine.to_parquet(staging / "quarantine.parquet", index=False)

    counts = {s: sum(1 for e in examples if e["split"] == s) for s in ("train", "eval")}
    manifest = {
        "examples": len(examples),
        "splits": counts,
        "vessels": {s: sorted(int(m) for m, v in splits.items() if v == s and m.isdigit()) for s in ("train", "eval")},
        "quarantine": {f"{k[0]}/{k[1]}": int(v) for k, v in quarantine.groupby(["stage", "reason"]).size().items()},
        "files": {p.name: _sha256(p) for p in sorted(staging.iterdir())},
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))

    replace_dir(staging, dataset_dir)
    return {"published": len(examples), **{f"{k}_examples": v for k, v in counts.items()},
            "train_vessels": len(manifest["vessels"]["train"]), "eval_vessels": len(manifest["vessels"]["eval"]),
            "quarantined_rows": len(quarantine)}


publish_task = task(name="publish-dataset")(publish_dataset)

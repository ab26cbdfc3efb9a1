"""Publish: one dataset version, split by MMSI, written atomically (a reader never sees half of it).

A version is the newest earlier version of its line (carried, each example on the side it was
published on) plus what this run adds. Before writing, the split is checked for leaks: no vessel
and no near-duplicate (cosine >= dedup.threshold) on both sides.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.artifacts import QUARANTINE_COLUMNS, quarantine_row, read_jsonl, replace_dir, write_jsonl
from tasks.config import DedupConfig, SplitConfig
from tasks.dedup import cross_split_near_duplicates
from tasks.errors import storage_faults
from tasks.split import assign_splits, split_key, time_holdout
from tasks.versions import read_examples, review_quarantine_rows

# what a trainer and lm-eval read; the full provenance stays in examples.parquet
TRAIN_FIELDS = ("id", "messages", "category", "difficulty", "form", "answerable", "mmsi", "fact", "grounding")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finish_manifest(manifest: dict[str, Any], examples: list[dict[str, Any]], quarantine: pd.DataFrame, folder: Path) -> dict[str, Any]:
    """The counts every version's manifest.json carries (examples, splits, vessels per split,
    quarantine by stage/reason, each file's sha256), written into folder; the other keys stay."""
    sides: dict[str, str] = {}
    for ex in examples:
        sides.setdefault(split_key(ex), ex["split"])
    manifest = {
        **manifest,
        "examples": len(examples),
        "splits": {s: sum(1 for e in examples if e["split"] == s) for s in ("train", "eval")},
        "vessels": {s: sorted(int(m) for m, v in sides.items() if v == s and m.isdigit()) for s in ("train", "eval")},
        # documents: the sections (or files) on each side
        **({"sections": {s: sorted(k[4:] for k, v in sides.items() if v == s and k.startswith("doc:")) for s in ("train", "eval")}}
           if any(k.startswith("doc:") for k in sides) else {}),
        "quarantine": {f"{k[0]}/{k[1]}": int(v) for k, v in quarantine.groupby(["stage", "reason"]).size().items()},
    }
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def write_version(examples: list[dict[str, Any]], quarantine: pd.DataFrame, manifest: dict[str, Any], staging: Path) -> dict[str, Any]:
    """train/eval JSONL, examples.parquet, quarantine.parquet and manifest.json (with every file's
    sha256) into staging; returns the manifest."""
    for split in ("train", "eval"):
        rows = [{k: ex[k] for k in TRAIN_FIELDS} for ex in examples if ex["split"] == split]
        write_jsonl(rows, staging / f"{split}.jsonl")
    frame = pd.DataFrame(examples)
    if len(frame):
        frame["messages"] = frame["messages"].map(lambda m: m if isinstance(m, str) else json.dumps(m))
        for column in ("mmsi", "asked_mmsi"):  # area questions have none: nullable ints, never 366000001.0
            if column in frame:
                frame[column] = frame[column].astype("Int64")
    frame.to_parquet(staging / "examples.parquet", index=False)
    quarantine = quarantine.astype("string")
    quarantine.to_parquet(staging / "quarantine.parquet", index=False)
    return finish_manifest(manifest, examples, quarantine, staging)


def _context_keys(example: dict[str, Any]) -> list[str]:
    keys = example.get("context_split_keys")
    return list(keys) if isinstance(keys, (list, tuple)) else list(json.loads(keys)) if isinstance(keys, str) and keys else []


def publish_dataset(
    deduped_path: Path,
    quarantine_paths: list[Path],
    cfg: SplitConfig,
    dataset_dir: Path,
    previous_dir: Path | None = None,
    version: dict[str, Any] | None = None,
    dedup_cfg: DedupConfig | None = None,
    embedding_cache: Path | None = None,
) -> dict[str, Any]:
    """`previous_dir`: the dataset version this one builds on. `version`: {lineage, run_id} for the
    manifest. `dedup_cfg`: checks train/eval for near-duplicates (the eval side of a pair leaves)."""
    dataset_dir = Path(dataset_dir)
    staging = dataset_dir.with_name(dataset_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    version = dict(version or {})

    carried = read_examples(previous_dir) if previous_dir else []
    fixed = {split_key(e): e["split"] for e in carried}
    carried_ids = {e["id"] for e in carried}
    new, rejected = [], []
    for ex in sorted(read_jsonl(deduped_path), key=lambda e: e["id"]):
        if ex["id"] in carried_ids:
            # the same seed, teacher and prompt version (dedup.against_published off): one id, one example
            rejected.append(quarantine_row("publish", "published_duplicate", "the version already holds this id", ex))
        else:
            ex["version_added"] = version.get("run_id")
            new.append(ex)
    new_ids = {e["id"] for e in new}
    splits = assign_splits(carried + new, cfg, fixed)
    for ex in new:
        ex["split"] = splits[split_key(ex)]
    # the time cut holds for the whole version: carried examples outside it leave too
    held_out = [quarantine_row("split", "split_holdout", why, ex) for ex in carried + new
                if (why := time_holdout(ex, ex["split"], cfg.time_cut))]
    held_ids = {r["record_id"] for r in held_out}
    # an example whose context shows another unit's text (a which-section question over sibling
    # sections) leaves when that unit is on the other side: its text would be in both splits
    crossing = [quarantine_row("split", "split_context_crosses", f"its context shows {k} ({splits[k]})", ex)
                for ex in new if ex["id"] not in held_ids
                if (k := next((k for k in _context_keys(ex) if splits.get(k, ex["split"]) != ex["split"]), None))]
    crossing_ids = {r["record_id"] for r in crossing}
    examples = [ex for ex in carried + new if ex["id"] not in held_ids | crossing_ids]

    # a train/eval near-duplicate pair loses its new member (published examples stay where they are);
    # when both are published (a review edit can do that), the eval one leaves
    leaks = cross_split_near_duplicates(examples, dedup_cfg, embedding_cache) if dedup_cfg else []
    leaked: dict[str, str] = {}
    for train_id, eval_id, sim in leaks:
        if train_id in leaked or eval_id in leaked:
            continue
        loser, other = (train_id, eval_id) if train_id in new_ids and eval_id not in new_ids else (eval_id, train_id)
        leaked[loser] = f"cosine {sim:.4f} to {other} on the other side of the split"
    rejected += held_out + crossing + [quarantine_row("split", "split_near_duplicate", leaked[ex["id"]], ex)
                            for ex in examples if ex["id"] in leaked]
    examples = [ex for ex in examples if ex["id"] not in leaked]

    frames = [pd.read_parquet(p) for p in quarantine_paths if Path(p).exists()]
    frames.append(pd.DataFrame(rejected, columns=list(QUARANTINE_COLUMNS)))
    carried_review = review_quarantine_rows(previous_dir)
    if carried_review is not None and len(carried_review):
        frames.append(carried_review)  # review decisions stay with the line: later runs must not re-add those
    quarantine = pd.concat([f.astype("string") for f in frames], ignore_index=True)

    train_keys = {split_key(e) for e in examples if e["split"] == "train"}
    shared = {split_key(e) for e in examples if e["split"] == "eval"} & train_keys
    manifest = write_version(examples, quarantine, {
        "version": {"lineage": version.get("lineage"), "run_id": version.get("run_id"),
                    "parent": previous_dir.parent.name if previous_dir else None,
                    "published_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                    "carried": sum(e["id"] not in new_ids for e in examples), "added": sum(e["id"] in new_ids for e in examples)},
        "leak_check": {"shared_split_keys": len(shared), "near_duplicate_pairs": len(leaks), "removed_from_eval": len(leaked),
                       "threshold": dedup_cfg.threshold if dedup_cfg else None},
    }, staging)
    replace_dir(staging, dataset_dir)
    return {"published": len(examples), "carried": manifest["version"]["carried"], "added": manifest["version"]["added"],
            "parent": manifest["version"]["parent"], "id_repeats": len(rejected) - len(held_out) - len(crossing) - len(leaked),
            "context_crossing_split": len(crossing),
            "held_out": sum(i in new_ids for i in held_ids), "held_out_carried": sum(i not in new_ids for i in held_ids),
            "leak_removed_new": sum(i in new_ids for i in leaked), "leak_removed_carried": sum(i not in new_ids for i in leaked),
            **{f"{k}_examples": v for k, v in manifest["splits"].items()},
            "train_vessels": len(manifest["vessels"]["train"]), "eval_vessels": len(manifest["vessels"]["eval"]),
            **({f"{s}_sections": len(manifest["sections"][s]) for s in ("train", "eval")} if "sections" in manifest else {}),
            "quarantined_rows": len(quarantine)}


def publish_version(deduped_path: Path, quarantine_paths: list[Path], cfg: SplitConfig, dataset_dir: Path,
                    previous_dir: Path | None = None, version: dict[str, Any] | None = None,
                    dedup_cfg: DedupConfig | None = None, embedding_cache: Path | None = None) -> dict[str, Any]:
    """publish_dataset, with a full or read-only disk reported in one line; what was staged is
    removed (space back on a full disk) and every earlier version stays as it was."""
    staging = Path(dataset_dir).with_name(Path(dataset_dir).name + ".partial")
    try:
        with storage_faults(staging):
            return publish_dataset(deduped_path, quarantine_paths, cfg, dataset_dir, previous_dir, version, dedup_cfg,
                                   embedding_cache)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


publish_task = task(name="publish-dataset")(publish_version)

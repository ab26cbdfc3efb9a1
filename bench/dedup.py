"""Dedup benchmark: tidewright's exact + FAISS dedup against distilabel's, side by side.

The issue it answers (issue 6, item 7):

    "Bench bench/dedup.py: 21,543 examples (the reference dataset's size) embedded and
    deduplicated, timed side by side with distilabel's EmbeddingDedup + FaissNearestNeighbour on
    the same examples and embeddings model; last line `seconds=<s> ratio_vs_distilabel=<x>
    removed=<n>`. Target: at most 90 s on 2 cores."

    .venv/bin/python bench/dedup.py [--examples 21543] [--work DIR] [--skip-distilabel] [--distilabel-k 10]

Examples (built once, cached in --work under a key of the code that makes them; not timed). The
project's own pipeline: simulate -> ingest -> stage -> facts -> seeds -> the offline
TemplateTeacher (corrupt_share 0), over simulator seeds 7, 8, ... (FLEET vessels x HOURS each)
until there are enough; a seeded sample of the union is kept. On top, PLANTED_NEAR_SHARE of the
total are paraphrases of kept examples (a leading time clause moved to the end of the question,
answer sentences swapped, one to three synonyms: "vessel" -> "ship", "between A and B" -> "from A
to B", ...) and PLANTED_EXACT_SHARE exact copies (half verbatim, half with changed case and
spacing, which tidewright's normalisation removes). A plant's id is its original's id plus a
suffix, so it sorts right after it: in tidewright's rule (the smallest id of a group survives) the
plant is the one to go. A planted pair counts as caught when it no longer survives whole.

Jobs, each in a fresh Python process with its libraries imported before the clock starts (the
times are model load + work, not interpreter and torch imports):

- tidewright cold: `tasks.dedup.dedup_examples` at DedupConfig defaults with no embedding cache.
  load / embed / search seconds come from timing wrappers around the module's own functions
  (load_embedder, embed_texts, duplicate_pairs, nearest_cosine); the real functions run.
- tidewright warm: the same with an embedding cache file (the nightly rerun): every vector comes
  back from SQLite, so no model load and no encoding. The cache is written after the cold run
  (untimed) from the vectors the cold run's model computed, through tasks.dedup.embed_texts.
- distilabel: the same texts (`tasks.dedup.dedup_text` of every example: distilabel has no exact
  step) through EmbeddingGeneration(SentenceTransformerEmbeddings(default_model_path(), device
  cpu)) in input batches of DedupConfig.batch_size, as a pipeline feeds a step, then
  FaissNearestNeighbour and EmbeddingDedup over all rows (both are global steps).

What had to be set for a fair comparison (distilabel 1.5.3's source and docs):
- the same model file and truncation: the wrapper has no max_seq_length, so after load its
  SentenceTransformer gets DedupConfig.max_seq_length (the model's own default is 256);
- cosine: normalize_embeddings (its default) and metric_type=faiss.METRIC_INNER_PRODUCT (the
  default, None, makes datasets build an L2 index, where "score > threshold" means "far apart");
- the threshold rule: EmbeddingDedup drops a neighbour whose score is > threshold, tidewright one
  whose cosine is >= threshold - 1e-6, so distilabel gets threshold - 1e-6;
- k: FaissNearestNeighbour keeps the k nearest (tidewright's range search keeps every one above
  the threshold); the report counts the rows whose k-th neighbour is still above the threshold.
Different by design, and visible in the table: EmbeddingDedup drops every neighbour above the
threshold, so both members of a pair go (`both of pair gone`); FaissNearestNeighbour drops
each row's first hit as "itself", and with exact twins the tie can put the twin first, so a row
then drops itself. tidewright also counts two examples with the same answer key (vessels, window,
computed values) as duplicates from DedupConfig.paraphrase_threshold, a rule distilabel has no
counterpart for. The FAISS index artifact distilabel writes inside a pipeline is skipped
standalone (it logs that).

The last line is `seconds=<tidewright cold> ratio_vs_distilabel=<distilabel s / tidewright s>
removed=<tidewright cold removed>` (ratio nan with --skip-distilabel).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

EXAMPLES = 21_543  # the reference dataset's size (DESIGN.md)
TARGET_S = 90.0
WORK = Path("/tmp/tidewright-bench-dedup")
FLEET = 150  # vessels per simulation: about 10,000 examples from one simulated day at the default shares
HOURS = 24.0
FIRST_SIM_SEED = 7
MAX_SIMULATIONS = 12
GENERATION_SEED = 11
PLANT_SEED = 2024
PLANTED_NEAR_SHARE = 0.02
PLANTED_EXACT_SHARE = 0.01
DISTILABEL_K = 10
# the code that decides which examples are built: a change here rebuilds the cache
BUILD_SOURCES = ("tasks/simulate.py", "tasks/seeds.py", "tasks/teacher.py", "tasks/catalogue", "tasks/facts.py", "sql")
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip


# --- examples --------------------------------------------------------------------------------


def build_key() -> str:
    digest = hashlib.sha256(f"{FLEET}|{HOURS}|{GENERATION_SEED}|{PLANT_SEED}".encode())
    for name in BUILD_SOURCES:
        path = REPO_ROOT / name
        for f in sorted(p for p in path.rglob("*") if p.suffix in (".py", ".sql")) if path.is_dir() else [path]:
            digest.update(f.read_bytes())
    return digest.hexdigest()[:10]


def simulated_examples(sim_dir: Path, sim_seed: int, max_seeds: int) -> list[dict[str, Any]]:
    """One simulated day through the real pipeline up to the template teacher; cached in sim_dir."""
    out = sim_dir / "examples.jsonl"
    if not out.exists():
        from tasks.config import FactsConfig, GenerateConfig, SimulateConfig, TeacherConfig
        from tasks.facts import compute_facts
        from tasks.ingest import ingest_noaa_csv
        from tasks.ports import load_ports
        from tasks.seeds import build_seeds
        from tasks.simulate import simulate
        from tasks.stage import stage_positions
        from tasks.teacher import generate_examples

        sim_dir.mkdir(parents=True, exist_ok=True)
        sim = simulate(SimulateConfig(seed=sim_seed, vessels=FLEET, hours=HOURS), load_ports(), sim_dir / "source")
        ingest_noaa_csv(sim.csv_path, sim_dir / "w.duckdb")
        staged = stage_positions(sim_dir / "w.duckdb", sim_dir / "staged")
        facts = compute_facts(sim_dir / "w.duckdb", None, FactsConfig(), sim_dir / "facts")
        build_seeds(staged.positions_path, facts.paths, facts.params, facts.digests, None,
                    GenerateConfig(seed=GENERATION_SEED, max_seeds=max_seeds), sim_dir / "seeds.jsonl")  # fmt: skip
        generate_examples(sim_dir / "seeds.jsonl", TeacherConfig(corrupt_share=0.0), GENERATION_SEED,
                          sim_dir / "generated.jsonl")  # fmt: skip
        (sim_dir / "generated.jsonl").replace(out)
    rows = [json.loads(line) for line in open(out)]
    for r in rows:  # seed ids repeat across simulations (same MMSI and hour): the id says which one
        r["id"] = f"s{sim_seed}-{r['id']}"
    return rows


SYNONYMS: list[tuple[str, str]] = [
    (r"\bvessel\b", "ship"), (r"\bVessel\b", "Ship"), (r"\bbetween (\S+) and (\S+)", r"from \1 to \2"),
    (r"\bspeed over ground\b", "SOG"), (r"\bnautical miles\b", "nm"), (r"\breported\b", "recorded"),
    (r"\breports\b", "messages"), (r"\bWhat was\b", "What's"), (r"\bhighest\b", "greatest"),
    (r"\baverage\b", "mean"), (r"\bminutes\b", "min"), (r"\bHow many\b", "What number of"),
    (r"\barrive\b", "get in"), (r"\bleave\b", "depart from"), (r"\bthe data\b", "the records"),
    (r"\bcell\b", "grid cell"), (r"\bport\b", "harbour"), (r"\bclosest\b", "nearest"),
]  # fmt: skip
LEADING_CLAUSE = re.compile(r"^((?:Over|Between|From|On|During|In|At) [^,?]{3,60}), (\w)(.*)\?$")


def paraphrase(question: str, answer: str, rng) -> tuple[str, str]:
    """What a second teacher pass might write for the same fact: a leading time clause moved to
    the end, the answer's sentences swapped, and one to three synonyms."""
    lines = []
    for line in question.split("\n"):
        m = LEADING_CLAUSE.match(line)
        lines.append(f"{m.group(2).upper()}{m.group(3)} {m.group(1)[0].lower()}{m.group(1)[1:]}?" if m else line)
    question = "\n".join(lines)
    turns = []
    for turn in answer.split("\n"):
        sentences = re.split(r"(?<=[.!?]) (?=[A-Z])", turn)
        if len(sentences) > 1 and rng.random() < 0.5:
            sentences = sentences[1:] + sentences[:1]
        turns.append(" ".join(sentences))
    answer = "\n".join(turns)
    applicable = [i for i, (pattern, _) in enumerate(SYNONYMS) if re.search(pattern, question + answer)]
    for i in rng.permutation(applicable)[: int(rng.integers(1, 4))]:
        pattern, replacement = SYNONYMS[i]
        question, answer = re.sub(pattern, replacement, question), re.sub(pattern, replacement, answer)
    return question, answer


def planted_copy(original: dict[str, Any], kind: str, question: str, answer: str) -> dict[str, Any]:
    """The original with a new id and wording; its grounding (the answer key) stays, as it would for
    a second wording of the same fact. `messages` keep the old wording: dedup reads question + answer."""
    copy = json.loads(json.dumps(original))
    copy.update(id=f"{original['id']}-{kind}", question=question, answer=answer)
    return copy


def build_examples(n: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """n examples (plants included) as JSONL sorted by id, and what was planted; cached."""
    import numpy as np

    key = build_key()
    path, meta_path = work / f"examples-{n}-{key}.jsonl", work / f"examples-{n}-{key}.json"
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    n_near, n_exact = round(n * PLANTED_NEAR_SHARE), round(n * PLANTED_EXACT_SHARE)
    n_base = n - n_near - n_exact
    started = time.perf_counter()
    pool: list[dict[str, Any]] = []
    sims = []
    for k in range(MAX_SIMULATIONS):
        sim_seed = FIRST_SIM_SEED + k
        made = simulated_examples(work / f"sim-{sim_seed}-{FLEET}v-{HOURS:g}h-{n_base}-{key}", sim_seed, n_base)
        pool += made
        sims.append(sim_seed)
        print(f"simulation seed {sim_seed}: {len(made):,} examples ({len(pool):,} of {n_base:,} needed, "
              f"{time.perf_counter() - started:.0f} s)", file=sys.stderr)  # fmt: skip
        if len(pool) >= n_base:
            break
    else:
        raise SystemExit(f"{MAX_SIMULATIONS} simulations gave {len(pool):,} examples, fewer than {n_base:,}")
    rng = np.random.default_rng(PLANT_SEED)
    base = [pool[i] for i in sorted(rng.choice(len(pool), size=n_base, replace=False))]
    planted = []
    for i in rng.permutation(n_base):
        original, j = base[int(i)], len(planted)
        if j == n_near + n_exact:
            break
        if j < n_near:
            question, answer = paraphrase(original["question"], original["answer"], rng)
            if (question, answer) == (original["question"], original["answer"]):
                continue  # nothing to paraphrase in this one
            copy = planted_copy(original, "near", question, answer)
        elif j % 2:
            copy = planted_copy(original, "exact", original["question"], original["answer"])
        else:  # the same text to tidewright's normalisation: case and spacing only
            copy = planted_copy(original, "exact", original["question"].upper(), original["answer"].replace(" ", "  "))
        planted.append({"id": copy["id"], "original": original["id"], "kind": "near" if j < n_near else "exact"})
        base.append(copy)
    base.sort(key=lambda e: e["id"])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for e in base:
            fh.write(json.dumps(e) + "\n")
    tmp.replace(path)
    meta = {"examples": n, "generated": n_base, "pool": len(pool), "simulations": sims, "planted": planted,
            "build_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    return path, meta


# --- jobs (each in a fresh process) ----------------------------------------------------------


def timed(module: Any, name: str, totals: dict[str, float]) -> None:
    """Wrap module.name so the seconds spent in it add up in totals[name]; the real function runs."""
    inner: Callable = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started

    setattr(module, name, wrapper)


class Replay:
    """Stands in for the model when the warm job's cache is filled: it returns the vectors the
    cold run's real model computed, so tasks.dedup.embed_texts writes them under its own keys."""

    def __init__(self, texts: list[str], vectors) -> None:
        self.vectors = dict(zip(texts, vectors))

    def encode(self, texts: list[str], **_: Any):
        import numpy as np

        return np.stack([self.vectors[t] for t in texts])


def run_tidewright(examples_path: Path, out_dir: Path, cache_path: Path | None,
                   fill_cache: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """One dedup_examples call, timed; fill_cache: afterwards (untimed) write the vectors it
    computed into a new embedding cache there, for the warm run."""
    import faiss  # noqa: F401 - imported before the clock, like the libraries of the distilabel job
    import pandas as pd
    import sentence_transformers  # noqa: F401
    import torch

    import tasks.dedup as dedup
    from tasks.config import DedupConfig

    cfg = DedupConfig()
    computed: list[tuple[list[str], Any]] = []
    embed_texts = dedup.embed_texts

    def recording_embed_texts(texts, *args, **kwargs):
        vectors, n = embed_texts(texts, *args, **kwargs)
        computed.append((texts, vectors))
        return vectors, n

    dedup.embed_texts = recording_embed_texts
    totals: dict[str, float] = {}
    for name in ("load_embedder", "embed_texts", "duplicate_pairs", "nearest_cosine"):
        timed(dedup, name, totals)
    started, cpu = time.perf_counter(), time.process_time()
    stats = dedup.dedup_examples(examples_path, cfg, out_dir / "kept.jsonl", out_dir / "quarantine.parquet",
                                 cache_path=cache_path)  # fmt: skip
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    dedup.embed_texts = embed_texts
    fill_s = None
    if fill_cache is not None:
        fill_cache.unlink(missing_ok=True)
        fill_s = time.perf_counter()
        for texts, vectors in computed:
            embed_texts(texts, cfg, fill_cache, model=Replay(texts, vectors))
        fill_s = time.perf_counter() - fill_s
    quarantine = pd.read_parquet(out_dir / "quarantine.parquet", columns=["record_id", "reason"])
    load = totals.get("load_embedder", 0.0)
    return {
        "torch_threads": torch.get_num_threads(),
        "seconds": seconds, "cpu_s": cpu, "cache_write_s": fill_s, "load_s": load,
        "embed_s": totals.get("embed_texts", 0.0) - load,
        "search_s": totals.get("duplicate_pairs", 0.0) + totals.get("nearest_cosine", 0.0),
        "embedded": stats["embedded"], "removed_ids": quarantine.record_id.tolist(),
        "reasons": quarantine.reason.value_counts().to_dict(),
    }  # fmt: skip


def run_distilabel(examples_path: Path, k: int) -> dict[str, Any]:
    import faiss
    import sentence_transformers  # noqa: F401 - the wrapper imports it in load(): not a cost of distilabel
    from distilabel.models import SentenceTransformerEmbeddings
    from distilabel.steps import EmbeddingDedup, EmbeddingGeneration, FaissNearestNeighbour

    from tasks.config import DedupConfig
    from tasks.dedup import dedup_text, default_model_path

    cfg = DedupConfig()
    rows = [{"id": e["id"], "text": dedup_text(e)} for e in map(json.loads, open(examples_path))]
    started, cpu = time.perf_counter(), time.process_time()
    generation = EmbeddingGeneration(
        embeddings=SentenceTransformerEmbeddings(model=str(default_model_path()), device="cpu", normalize_embeddings=True),
        input_batch_size=cfg.batch_size,
    )
    generation.load()
    generation.embeddings._model.max_seq_length = cfg.max_seq_length  # the same truncation as tidewright
    loaded = time.perf_counter()
    embedded: list[dict[str, Any]] = []
    for i in range(0, len(rows), cfg.batch_size):
        embedded += next(generation.process(rows[i:i + cfg.batch_size]))
    encoded = time.perf_counter()
    neighbours = FaissNearestNeighbour(metric_type=faiss.METRIC_INNER_PRODUCT, k=k)
    neighbours.load()
    with_nn = next(neighbours.process(embedded))
    deduper = EmbeddingDedup(threshold=cfg.threshold - 1e-6)
    deduper.load()
    result = next(deduper.process(with_nn))
    finished, cpu = time.perf_counter(), time.process_time() - cpu
    return {
        "seconds": finished - started, "cpu_s": cpu, "load_s": loaded - started, "embed_s": encoded - loaded,
        "search_s": finished - encoded, "embedded": len(rows),
        "removed_ids": [r["id"] for r in result if not r["keep_row_after_embedding_filtering"]],
        # rows whose k-th neighbour is still above the threshold: a larger k could remove more
        "saturated": sum(1 for r in with_nn if len(r["nn_scores"]) == k and r["nn_scores"][-1] > deduper.threshold),
    }  # fmt: skip


def job_main(args: argparse.Namespace) -> None:
    out_dir = args.work / f"job-{args.job}"
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = args.work / "embedding_cache.sqlite"
    if args.job == "tidewright-cold":
        results = {"cold": run_tidewright(args.examples_path, out_dir, None, fill_cache=cache)}
    elif args.job == "tidewright-warm":
        results = {"warm": run_tidewright(args.examples_path, out_dir, cache)}
    else:
        results = {"distilabel": run_distilabel(args.examples_path, args.distilabel_k)}
    (out_dir / "result.json").write_text(json.dumps(results))


def run_job(job: str, examples_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--job", job, "--examples-path", str(examples_path), "--work", str(args.work),
               "--distilabel-k", str(args.distilabel_k)]  # fmt: skip
    load = os.getloadavg()[0]
    print(f"running {job} (load average {load:.1f}) ...", file=sys.stderr)
    proc = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **ENV, "PYTHONPATH": str(REPO_ROOT)},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"job {job} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    results = json.loads((args.work / f"job-{job}" / "result.json").read_text())
    for r in results.values():
        r["load_before"] = load
    return results


# --- report ----------------------------------------------------------------------------------


def planted_counts(removed: set[str], planted: list[dict[str, Any]]) -> dict[str, int]:
    """A planted pair is caught when it no longer survives whole (the plant, its original or both
    removed); `both`: pairs of which nothing survived."""
    out = {"near": 0, "exact": 0, "both": 0}
    for p in planted:
        out[p["kind"]] += p["id"] in removed or p["original"] in removed
        out["both"] += p["id"] in removed and p["original"] in removed
    return out


def print_report(results: dict[str, dict[str, Any]], meta: dict[str, Any], k: int) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    planted = meta["planted"]
    n_near = sum(p["kind"] == "near" for p in planted)
    n_exact = len(planted) - n_near
    table = Table(title=f"dedup of {meta['examples']:,} examples ({meta['generated']:,} generated + {n_near} paraphrases + "
                  f"{n_exact} exact copies), {os.cpu_count()} CPUs", box=box.SIMPLE_HEAD)  # fmt: skip
    for name in ("method", "load avg", "seconds", "CPU s", "load s", "embed s", "search s", "other s", "embedded",
                 "removed", "paraphrases caught", "copies caught", "both of pair gone"):  # fmt: skip
        table.add_column(name, justify="left" if name == "method" else "right")
    labels = {"cold": "tidewright cold", "warm": "tidewright warm cache", "distilabel": f"distilabel k={k}"}
    for key, label in labels.items():
        r = results.get(key)
        if r is None:
            continue
        got = planted_counts(set(r["removed_ids"]), planted)
        other = r["seconds"] - r["load_s"] - r["embed_s"] - r["search_s"]
        table.add_row(label, f"{r['load_before']:.1f}", f"{r['seconds']:.1f}", f"{r['cpu_s']:.1f}", f"{r['load_s']:.1f}",
                      f"{r['embed_s']:.1f}", f"{r['search_s']:.1f}", f"{other:.1f}", f"{r['embedded']:,}",
                      f"{len(r['removed_ids']):,}", f"{got['near']}/{n_near}", f"{got['exact']}/{n_exact}",
                      f"{got['both']}/{len(planted)}")  # fmt: skip
    Console(width=180).print(table)
    print("load avg: the 1-minute load average as the job started; CPU s: the job's CPU seconds over all its "
          "threads (the 2 cores are shared: wall time moves with the load, CPU time much less)\nload: model load; "
          "embed: encoding (tidewright: + cache reads); search: FAISS (tidewright: the near-duplicate range search + "
          "the report's nearest-cosine histogram; distilabel: FaissNearestNeighbour + EmbeddingDedup); other: reading, "
          "exact hashing, writing (tidewright)")  # fmt: skip
    cold, warm = results["cold"], results["warm"]
    print(f"torch threads: {cold['torch_threads']}; examples embedded per CPU second (cold): "
          f"{cold['embedded'] / cold['cpu_s']:.1f}")  # fmt: skip
    print(f"tidewright cold removed by reason: {cold['reasons']}")
    print(f"cache for the warm run written from the cold run's vectors in {cold['cache_write_s']:.1f} s (not timed)"
          + ("" if warm["embedded"] == 0 else f"; CHECK: the warm run still embedded {warm['embedded']:,} texts"))
    print(f"examples: {meta['simulations'][0]}..{meta['simulations'][-1]} simulator seeds, {FLEET} vessels x {HOURS:g} h "
          f"each, {meta['pool']:,} generated, {meta['generated']:,} sampled (built in {meta['build_s']} s, not timed)")  # fmt: skip
    dl = results.get("distilabel")
    if dl is not None:
        ours, theirs = set(cold["removed_ids"]), set(dl["removed_ids"])
        union = ours | theirs
        print(f"removal sets: both {len(ours & theirs):,}, tidewright only {len(ours - theirs):,}, distilabel only "
              f"{len(theirs - ours):,}; Jaccard {len(ours & theirs) / len(union) if union else 1.0:.3f}")  # fmt: skip
        print(f"distilabel rows with all {k} neighbours above the threshold (a larger k could remove more): {dl['saturated']:,}")
        print(f"ratio (same run): distilabel {dl['seconds']:.1f} s / tidewright {cold['seconds']:.1f} s = "
              f"{dl['seconds'] / cold['seconds']:.2f} wall; {dl['cpu_s'] / cold['cpu_s']:.2f} in CPU seconds "
              "(the steadier of the two when the load changes between the jobs)")  # fmt: skip
    verdict = "within" if cold["seconds"] <= TARGET_S else "ABOVE"
    print(f"tidewright cold: {cold['seconds']:.1f} s, {verdict} the {TARGET_S:.0f} s target")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=EXAMPLES, help="examples to deduplicate, plants included")
    parser.add_argument("--work", type=Path, default=WORK, help="cache of built examples and the jobs' outputs")
    parser.add_argument("--skip-distilabel", action="store_true", help="time tidewright only")
    parser.add_argument("--distilabel-k", type=int, default=DISTILABEL_K, help="FaissNearestNeighbour's k")
    parser.add_argument("--job", choices=("tidewright-cold", "tidewright-warm", "distilabel"), help=argparse.SUPPRESS)
    parser.add_argument("--examples-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.examples < 100 or args.distilabel_k < 1:
        parser.error("--examples must be at least 100 and --distilabel-k at least 1")
    if args.job:
        job_main(args)
        return
    os.environ.update(ENV)
    args.work.mkdir(parents=True, exist_ok=True)
    examples_path, meta = build_examples(args.examples, args.work)
    results = run_job("tidewright-cold", examples_path, args)
    if not args.skip_distilabel:
        results |= run_job("distilabel", examples_path, args)
    results |= run_job("tidewright-warm", examples_path, args)
    print()
    print_report(results, meta, args.distilabel_k)
    ratio = results["distilabel"]["seconds"] / results["cold"]["seconds"] if "distilabel" in results else float("nan")
    print(f"seconds={results['cold']['seconds']:.1f} ratio_vs_distilabel={ratio:.2f} removed={len(results['cold']['removed_ids'])}")


if __name__ == "__main__":
    main()

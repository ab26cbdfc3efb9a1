"""Generation fanned out over teacher batches: the seeds split by teacher into batches of
`teacher.batch_size`, each batch its own Prefect task (named for its teacher and number, reused across
runs on its own), teachers side by side, then one generated.jsonl, ledger and quarantine.

Why batches of one teacher run one after another: a teacher's `concurrency`, `requests_per_minute`
and `tokens_per_minute` are enforced inside one generation call; two batches of the same teacher at
once would each get the full allowance. Different teachers have separate limits, so they run in
parallel. `teacher.budget_usd` is one run's spend across all teachers: with a budget set, generation
stays a single batch.

Teacher assignment and every example depend only on the seed (a hash of its id), never on the
other seeds in a batch, so the merged output is the same as one unbatched call, in seed order.
"""

from __future__ import annotations

import contextvars
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from tasks.artifacts import QUARANTINE_COLUMNS
from tasks.config import TeacherConfig


@dataclass(frozen=True)
class SeedBatch:
    name: str        # "<teacher>-<k>of<n>", also the Prefect task name's suffix
    teacher: str
    seeds_path: Path
    seeds: int

    def out(self, kind: str) -> Path:
        return self.seeds_path.with_name(f"{self.name}.{kind}")


def teacher_batches(seeds_path: Path, cfg: TeacherConfig, generation_seed: int, out_dir: Path) -> list[SeedBatch]:
    """Write the seeds of each teacher, in their order, as batch files under out_dir."""
    from tasks.teacher import assign_teachers

    lines = [line for line in Path(seeds_path).read_text().splitlines() if line.strip()]
    ids = [json.loads(line)["seed_id"] for line in lines]
    assigned = assign_teachers([SimpleNamespace(seed_id=i) for i in ids], cfg, generation_seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*"):  # an earlier attempt's batch files; its ledgers record what was paid: kept
        if not stale.name.endswith("ledger.jsonl"):
            stale.unlink()
    if cfg.budget_usd is not None:
        groups = [("all", lines)]
    else:
        groups = [(t.name, [line for line, i in zip(lines, ids) if assigned[i] == t.name]) for t in cfg.teachers]
    batches = []
    for teacher, mine in groups:
        size = len(mine) if cfg.budget_usd is not None else cfg.batch_size
        n = math.ceil(len(mine) / size) if mine else 0
        for k in range(n):
            part = mine[k * size:(k + 1) * size]
            path = out_dir / f"{teacher}-{k + 1}of{n}.seeds.jsonl"
            path.write_text("\n".join(part) + "\n")
            batches.append(SeedBatch(path.name.removesuffix(".seeds.jsonl"), teacher, path, len(part)))
    return batches


def failed_batch_stats(batch: SeedBatch) -> dict[str, Any]:
    """What a batch whose LLM teacher produced nothing (TeacherError) adds to the merged statistics,
    from its quarantine and ledger (generate_examples wrote both before it raised)."""
    from tasks.llm.ledger import read_ledger, summarize

    batch.out("generated.jsonl").write_text("")
    paid = summarize(read_ledger(batch.out("ledger.jsonl")))["overall"]
    quarantine = batch.out("quarantine.parquet")
    return {"seeds": batch.seeds, "generated": 0, "rejected": len(pd.read_parquet(quarantine)) if quarantine.exists() else 0,
            "per_teacher": {}, "planted_errors": 0,
            "llm": {"items": batch.seeds, "accepted": 0, "calls": paid["calls"], "cache_hits": paid["cache_hits"],
                    "input_tokens": paid["input_tokens"], "output_tokens": paid["output_tokens"],
                    "cost_usd": paid["cost_usd"], "item_cost_usd": paid["cost_usd"], "stopped": "teacher_failing"}}


def not_paid_again(stats: dict[str, Any], from_run: str) -> dict[str, Any]:
    """Generation or judge statistics of a stage reused from an earlier run: this run asked nothing
    and paid nothing (what the examples cost to make, item_cost_usd, stays)."""
    out = {**stats, "reused_from": from_run}
    llm = stats.get("llm") if "llm" in stats else stats
    if not llm:
        return out
    zeroed = {**llm, **{k: 0 for k in ("calls", "input_tokens", "output_tokens") if k in llm},
              **({"cost_usd": 0.0} if "cost_usd" in llm else {})}
    if "llm" in stats:
        out["llm"] = zeroed
    else:
        out.update(zeroed)
    return out


def run_batches(batches: list[SeedBatch], generate: Callable[[SeedBatch], dict[str, Any]]) -> list[dict[str, Any]]:
    """generate(batch) for every batch: one thread per teacher, its batches in order. Each thread
    runs in a copy of the caller's context, so Prefect sees the tasks as part of the flow run."""
    by_teacher: dict[str, list[SeedBatch]] = {}
    for b in batches:
        by_teacher.setdefault(b.teacher, []).append(b)

    def chain(mine: list[SeedBatch]) -> list[dict[str, Any]]:
        return [generate(b) for b in mine]

    with ThreadPoolExecutor(max_workers=max(1, len(by_teacher)), thread_name_prefix="teacher") as pool:
        futures = {t: pool.submit(contextvars.copy_context().run, chain, mine) for t, mine in by_teacher.items()}
        done = {t: f.result() for t, f in futures.items()}
    return [result for t in by_teacher for result in done[t]]


def _merge(a: Any, b: Any, key: str = "") -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if key == "final_concurrency":
        return b
    if isinstance(a, bool) or isinstance(b, bool):
        return a or b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return round(a + b, 10) if isinstance(a, float) or isinstance(b, float) else a + b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a.get(k), b.get(k), k) for k in [*a, *(k for k in b if k not in a)]}
    if isinstance(a, str) and isinstance(b, str):
        return ",".join(dict.fromkeys([*a.split(","), *b.split(",")]))
    return b


def merge_generation_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One generate_examples result from the results of its batches (counts, tokens and costs add up)."""
    merged: dict[str, Any] = {}
    for part in parts:
        merged = _merge(merged, {k: v for k, v in part.items() if k != "teacher"})
    merged.setdefault("seeds", 0)
    merged.setdefault("generated", 0)
    merged.setdefault("rejected", 0)
    merged["per_teacher"] = dict(sorted((merged.get("per_teacher") or {}).items()))
    merged["teacher"] = ", ".join(f"{k} ({v})" for k, v in merged["per_teacher"].items())
    llm = merged.get("llm") or {}
    for block in [llm, *(llm.get("per_category") or {}).values()]:
        if "cost_per_accepted_usd" in block:
            spent = block.get("item_cost_usd", block.get("cost_usd", 0.0))
            block["cost_per_accepted_usd"] = round(spent / block["accepted"], 6) if block.get("accepted") else None
    merged["llm"] = llm
    merged["batches"] = len(parts)
    return merged


def merge_batch_files(batches: list[SeedBatch], seeds_path: Path, out_path: Path, ledger_path: Path,
                      quarantine_path: Path) -> None:
    """generated.jsonl in seed order (dedup keeps the first of near-duplicates: order is part of the
    result), the batches' ledgers and quarantines concatenated; each file replaced atomically."""
    order = {json.loads(line)["seed_id"]: n for n, line in enumerate(Path(seeds_path).read_text().splitlines()) if line.strip()}
    examples = []
    for b in batches:
        examples += [line for line in b.out("generated.jsonl").read_text().splitlines() if line.strip()]
    examples.sort(key=lambda line: order[json.loads(line)["seed_id"]])
    _write_text(out_path, "".join(line + "\n" for line in examples))
    ledgers = sorted(batches[0].seeds_path.parent.glob("*.ledger.jsonl")) if batches else []
    if ledgers:
        _write_text(ledger_path, "".join(p.read_text() for p in ledgers))
    frames = [pd.read_parquet(b.out("quarantine.parquet")) for b in batches if b.out("quarantine.parquet").exists()]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    tmp = quarantine_path.with_name(quarantine_path.name + ".tmp")
    frame.astype("string").to_parquet(tmp, index=False)
    tmp.replace(quarantine_path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

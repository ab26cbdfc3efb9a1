"""The run report: counts at every stage (they must add up), the dataset's make-up, and scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.seeds import actual_shares


def funnel_balance(stats: dict[str, Any]) -> dict[str, int]:
    """seeds = generated + quarantined by the teacher stage, and generated = kept + quarantined
    (validation) + deduped. The report prints it; a test checks it."""
    gen = stats["generate"]
    generated = gen["generated"]
    quarantined = stats["validate"]["rejected"]
    deduped = stats["dedup"]["exact_duplicates"] + stats["dedup"]["near_duplicates"]
    kept = stats["publish"]["published"]
    seeds = stats["seeds"]["seeds"]
    return {"seeds": seeds, "teacher_rejected": gen.get("rejected", 0), "generated": generated, "kept": kept,
            "quarantined": quarantined, "deduped": deduped,
            "balanced": int(generated == kept + quarantined + deduped and seeds == generated + gen.get("rejected", 0))}


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _score(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def _money(v: Any) -> str:
    return "-" if v is None else f"${float(v):.4f}"


def generation_section(gen: dict[str, Any], seeds: dict[str, Any], examples: pd.DataFrame | None = None) -> list[str]:
    """Shares against their targets (seeds, and what was published), and what the teachers cost."""
    out: list[str] = []
    shares = seeds.get("shares")
    if shares:
        published = actual_shares(examples.to_dict("records")) if examples is not None else None
        rows = []
        for dim, table in shares.items():
            for key, row in table.items():
                rows.append([dim, key, f"{row['target']:.3f}", f"{row['actual']:.3f}",
                             "yes" if row["within_tolerance"] else "NO"]
                            + ([f"{published[dim].get(key, 0.0):.3f}"] if published is not None else []))
        headers = ["dimension", "value", "target", "seeds", "seeds within tolerance"] + (["published"] if published else [])
        out += ["## Question mix", "",
                "Category and difficulty shares are of answerable questions; unanswerable and multi-turn of all. "
                "`published` is after the grounding gate and dedup, which drop some questions.", "",
                _table(headers, rows), ""]
        short = [k for k, v in seeds.get("targets", {}).items() if "/" in k and v["taken"] < v["target"]]
        if short:
            out += [f"Short of candidates (fewer facts than the target asked): {', '.join(short)}.", ""]
    llm = gen.get("llm") or {}
    if llm:
        out += ["## Teachers and cost", "",
                f"{llm['items']} seeds went to LLM teachers: {llm['accepted']} accepted; {llm['calls']} calls, "
                f"{llm['cache_hits']} answered from the response cache; {llm['input_tokens']} input + "
                f"{llm['output_tokens']} output tokens; paid in this run {_money(llm['cost_usd'])}; the examples cost "
                f"{_money(llm.get('item_cost_usd'))} to make, cached answers included "
                f"({_money(llm['cost_per_accepted_usd'])} per accepted example)"
                + (f"; stopped early: {llm['stopped']}" if llm.get("stopped") else "") + ".", ""]
        def per_accepted(t: dict[str, Any]) -> str:
            n = t.get("statuses", {}).get("accepted", 0)
            return _money(t["item_cost_usd"] / n) if n and t.get("item_cost_usd") is not None else "-"

        rows = [[name, t.get("model"), t.get("items"), t.get("statuses", {}).get("accepted", 0), t.get("calls"),
                 t.get("retries"), t.get("reasks"), t.get("input_tokens"), t.get("output_tokens"), _money(t.get("cost_usd")),
                 per_accepted(t)]
                for name, t in sorted(llm.get("per_teacher", {}).items())]
        if rows:
            out += [_table(["teacher", "model", "seeds", "accepted", "calls", "retries", "re-asks", "input tok",
                            "output tok", "paid", "cost per accepted"], rows), ""]
        rows = [[c, v["accepted"], _money(v["cost_usd"]), _money(v["cost_per_accepted_usd"])]
                for c, v in llm.get("per_category", {}).items()]
        if rows:
            out += [_table(["category", "accepted", "cost", "cost per accepted"], rows), ""]
    return out


def render_report(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    stats = json.loads((run_dir / "stats.json").read_text())
    out = [f"# tidewright run `{run_dir.name}`", ""]
    run = stats.get("run", {})
    out += [f"Config: `{run.get('config')}`; source: {run.get('source')}; teacher: {stats.get('generate', {}).get('teacher')}.", ""]

    out += ["## Funnel", ""]
    ing, stg = stats["ingest"], stats["stage"]
    rows = [
        ["AIS rows read", ing["rows"], f"{ing.get('malformed', 0)} malformed lines quarantined"],
        ["positions staged", stg["kept"], ", ".join(f"{k}: {v}" for k, v in stg["rejected"].items()) or "none"],
    ]
    for name, n in stats["facts"]["counts"].items():
        rows.append([f"facts: {name}", n, ""])
    seeds = stats["seeds"]
    rows.append(["seed questions", seeds["seeds"], f"from {seeds['candidates']} candidates; {seeds['unanswerable']} "
                 f"unanswerable; {seeds.get('dialogues', 0)} multi-turn dialogues"])
    gen, val, ded, pub = stats["generate"], stats["validate"], stats["dedup"], stats["publish"]
    rows.append(["examples generated", gen["generated"], f"teachers {gen['teacher']}; "
                 f"{gen.get('rejected', 0)} seeds quarantined by the teacher stage"])
    rows.append(["passed validation", val["kept"], ", ".join(f"{k}: {v}" for k, v in val["reasons"].items()) or "none rejected"])
    rows.append(["after dedup", ded["kept"], f"exact: {ded['exact_duplicates']}, near (cosine >= {ded['threshold']}): {ded['near_duplicates']}"])
    rows.append(["published", pub["published"], f"train {pub['train_examples']} ({pub['train_vessels']} vessels), eval {pub['eval_examples']} ({pub['eval_vessels']} vessels)"])
    out += [_table(["stage", "count", "detail"], rows), ""]
    bal = funnel_balance(stats)
    mark = "balanced" if bal["balanced"] else "DOES NOT BALANCE"
    out += [f"Check: seed questions {bal['seeds']} = generated {bal['generated']} + quarantined by the teacher "
            f"stage {bal['teacher_rejected']}; generated {bal['generated']} = kept {bal['kept']} + quarantined "
            f"{bal['quarantined']} + deduped {bal['deduped']} ({mark}). Every rejected row is in "
            "`dataset/quarantine.parquet` with its reason.", ""]
    examples_path = run_dir / "dataset" / "examples.parquet"
    published = None
    if examples_path.exists():
        published = pd.read_parquet(examples_path)
        if "turns" not in published:
            published = None
    out += generation_section(gen, seeds, published)
    if gen.get("planted_errors"):
        out += [f"Offline teacher planted {gen['planted_errors']} wrong values (teacher.corrupt_share); "
                f"the grounding gate caught {val['planted_errors_caught']}.", ""]

    files = ing.get("files") or {}
    if files:
        out += ["## Ingest", "", _table(["file", "records in", "loaded", "quarantined at ingest"],
                [[f"`{Path(f).name}`", v["rows_in"], v["loaded"], v["quarantined"]] for f, v in files.items()]), ""]
        out += [f"Staged {stg['kept']} positions; quarantined by reason: "
                + (", ".join(f"{k} {v}" for k, v in stg["rejected"].items()) or "none") + "."]
        if stg.get("days"):
            out += [f"Day partitions written: {', '.join(stg['days'])} in `{stg.get('store_dir')}/positions/`."]
        out.append("")

    examples_path = run_dir / "dataset" / "examples.parquet"
    if examples_path.exists():
        ex = pd.read_parquet(examples_path, columns=["category", "difficulty", "split", "answerable"])
        if len(ex):
            pivot = ex.groupby(["category", "difficulty", "split"]).size().unstack(fill_value=0)
            out += ["## Dataset make-up", "", _table(["category", "difficulty", *pivot.columns],
                    [[c, d, *vals] for (c, d), vals in zip(pivot.index, pivot.values.tolist())]), "",
                    f"Unanswerable questions: {int((~ex['answerable'].astype(bool)).sum())}.", ""]

    if "train" in stats:
        t = stats["train"]
        out += ["## Training", "",
                f"Student `{t['base_model']}`; method {t['method']} on {t['device']}; {t['steps']} steps over "
                f"{t['examples']} of {pub['train_examples']} train examples"
                f"{' (the rest exceed train.max_length and were skipped)' if t['examples'] < pub['train_examples'] else ''}"
                f" in {t['seconds']:.1f} s; train loss {t['train_loss']:.3f}; "
                f"eval loss {_score(t.get('eval_loss'))}.", ""]
    results_path = run_dir / "eval" / "results.json"
    if results_path.exists():
        res = json.loads(results_path.read_text())
        out += ["## Evaluation (lm-eval)", "", f"Task `{res['task']}` over the eval split (limit {res['limit']}).", ""]
        metrics = [m for m in ("exact_match", "token_f1") if m in res["base"]]
        out.append(_table(["model", *metrics, "n"], [
            [name, *[_score(res[name][m]) for m in metrics], res[name]["n"]] for name in ("base", "tuned")
        ]))
        cats = sorted(set(res["base"].get("per_category", {})) | set(res["tuned"].get("per_category", {})))
        if cats:
            out += ["", "Per category (token F1, base -> tuned):", ""]
            out.append(_table(["category", "base", "tuned", "n"], [
                [c, _score(res["base"]["per_category"].get(c, {}).get("token_f1")),
                 _score(res["tuned"]["per_category"].get(c, {}).get("token_f1")),
                 res["tuned"]["per_category"].get(c, {}).get("n", 0)] for c in cats]))
        out.append("")

    out += ["## Files", "",
            "- `dataset/train.jsonl`, `dataset/eval.jsonl`: chat examples (`messages`), split by MMSI",
            "- `dataset/examples.parquet`: kept examples with provenance (sql file + digest, params, source-row hash, teacher, seed)",
            "- `dataset/quarantine.parquet`: every rejected AIS row and example with its stage and reason",
            "- `facts/*.parquet`, `staged/positions/` (the day files this run touched, hive-partitioned), `warehouse.duckdb`: the computed facts and cleaned positions",
            "- `eval/results.json`, `eval/lm_eval_task/`: scores, and the lm-eval task to re-run by hand", ""]
    return "\n".join(out)


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text(render_report(run_dir))
    tmp.replace(path)
    return path

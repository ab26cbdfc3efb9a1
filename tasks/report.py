"""The run report: counts at every stage (they must add up), the dataset's make-up, and scores."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.seeds import actual_shares


GATE_STAGES = ("known", "judge")  # optional checks, in flow order: in the funnel when enabled


def gate_steps(stats: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(step, examples left after it, what it dropped and why), from generated to published."""
    gen, val, ded, bal, pub = (stats.get(k, {}) for k in ("generate", "validate", "dedup", "balance", "publish"))
    left = gen["generated"]
    steps = [("generated", left, f"{gen.get('rejected', 0)} seeds quarantined by the teacher stage")]
    validators = val.get("validators") or [{"name": "validation", "dropped": val["rejected"], "reasons": val["reasons"]}]
    for v in validators:
        left -= v["dropped"]
        steps.append((v["name"], left, ", ".join(f"{k} {n}" for k, n in v["reasons"].items()) or "-"))
    for name in GATE_STAGES:
        stage = stats.get(name) or {}
        if stage.get("enabled"):
            left -= stage["dropped"]
            why = ", ".join(f"{k} {n}" for k, n in stage["reasons"].items()) or "-"
            if stage.get("skipped") and isinstance(stage["skipped"], int):
                why += f"; not checked: {stage['skipped']} ({stage.get('skip_reason') or 'unscored'})"
            steps.append((name, left, why))
    for label, n, why in (("exact dedup", ded["exact_duplicates"], "same normalised text"),
                          ("near dedup", ded["near_duplicates"], f"cosine >= {ded['threshold']}"),
                          ("vs published", ded.get("published_duplicates", 0),
                           f"repeats of the {ded.get('published_compared', 0)} published (or review-rejected) examples")):
        left -= n
        steps.append((label, left, f"{n} dropped: {why}"))
    if bal:
        left -= bal["dropped"]
        steps.append(("balancing", left, ", ".join(f"{k} {n}" for k, n in bal["reasons"].items()) or "no cap reached"))
    left -= (pub.get("held_out", 0) + pub.get("leak_removed_new", 0) + pub.get("id_repeats", 0)
             + pub.get("context_crossing_split", 0))
    crossing = f", context showing the other side {pub['context_crossing_split']}" if pub.get("context_crossing_split") else ""
    steps.append(("split and publish", left, f"time-window holdout {pub.get('held_out', 0)}, train/eval near-duplicates "
                                             f"{pub.get('leak_removed_new', 0)}, ids already in the version "
                                             f"{pub.get('id_repeats', 0)}{crossing}"))
    return steps


def funnel_balance(stats: dict[str, Any]) -> dict[str, int]:
    """seeds = generated + quarantined by the teacher stage, and every generated example is either
    added to the dataset or quarantined by exactly one later step. The report prints it; a test checks it."""
    gen, pub = stats["generate"], stats["publish"]
    steps = gate_steps(stats)
    seeds = stats["seeds"]["seeds"]
    added = pub.get("added", pub["published"])
    return {"seeds": seeds, "teacher_rejected": gen.get("rejected", 0), "generated": gen["generated"], "kept": added,
            "quarantined": gen["generated"] - steps[-1][1],
            "balanced": int(steps[-1][1] == added and seeds == gen["generated"] + gen.get("rejected", 0))}


def _cell(value: Any) -> str:
    """A table cell: a pipe escaped (GitHub markdown honours the escape inside code spans too) and
    line breaks as spaces, so text from the data (file names, labels) can neither add a column nor
    end the row."""
    return " ".join(str(value).replace("|", "\\|").split())


def _code(text: Any) -> str:
    """Text from the data as an inline code span whose fence is longer than any run of backticks in it."""
    text = str(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(_cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
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
        if published is not None and "unanswerable_kind" in examples:  # documents: each edge-case kind of all
            kinds = examples["unanswerable_kind"].dropna().value_counts()
            published["edge_case"] = {k: round(int(v) / (len(examples) or 1), 4) for k, v in kinds.items()}
        rows = []
        for dim, table in shares.items():
            for key, row in table.items():
                rows.append([dim, key, f"{row['target']:.3f}", f"{row['actual']:.3f}",
                             "yes" if row["within_tolerance"] else "NO"]
                            + ([f"{published.get(dim, {}).get(key, 0.0):.3f}"] if published is not None else []))
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


def quality_gate_section(stats: dict[str, Any], run_dir: Path) -> list[str]:
    """The gate's funnel, the question mix before/after balancing and the similarity histogram,
    as tables and as PNGs in plots/."""
    from tasks.plots import distribution_plot, funnel_plot, similarity_plot

    steps = gate_steps(stats)
    out = ["## Quality gate", "", _table(["step", "examples left", "dropped (reason count)"],
                                         [[name, n, why] for name, n, why in steps]), ""]
    plots = Path(run_dir) / "plots"
    funnel_plot([(name, n) for name, n, _ in steps], plots / "funnel.png")
    out += ["![funnel](plots/funnel.png)", ""]
    bal = stats.get("balance")
    if bal:
        before, after = bal["before"], bal["after"]
        keys = sorted(set(before["category_difficulty"]) | set(after["category_difficulty"]))
        out += ["Question mix of the dataset version before and after balancing"
                + (f" ({bal['carried']} examples carried from the previous version count in both)" if bal.get("carried") else "")
                + ":", "", _table(["category/difficulty", "before", "after"],
                                  [[k, before["category_difficulty"].get(k, 0), after["category_difficulty"].get(k, 0)] for k in keys]), ""]
        distribution_plot(before, after, plots / "distribution.png")
        out += ["![distribution](plots/distribution.png)", ""]
    ded = stats["dedup"]
    hist = ded.get("similarity_histogram")
    if hist and sum(hist["candidates"]):
        similarity_plot(hist, ded["threshold"], plots / "similarity.png")
        top = ded.get("max_kept_cosine")
        out += [f"Nearest-neighbour cosine (question + answer, MiniLM): highest among kept examples "
                f"{'-' if top is None else f'{top:.3f}'} (threshold {ded['threshold']}).", "",
                "![similarity](plots/similarity.png)", ""]
    leak = stats["publish"]
    out += [f"Split check: no split key on both sides; train/eval near-duplicate pairs removed from eval: "
            f"{leak.get('leak_removed_new', 0) + leak.get('leak_removed_carried', 0)}.", ""]
    return out


def stages_reused_section(stages: dict[str, Any]) -> list[str]:
    """One line: which stages this run took from an earlier run's cache (`run.reuse_stages`)."""
    reused = {name: r for name, r in stages.items() if r.get("reused")}
    if not stages:
        return []
    if not reused:
        return ["Stages reused from earlier runs: none (every stage ran).", ""]
    runs = sorted({r["from_run"] for r in reused.values()})
    ran = [name for name in stages if name not in reused]
    return [f"Stages reused from earlier runs (unchanged inputs, config, SQL and code): {', '.join(reused)} "
            f"(from {', '.join(f'`{r}`' for r in runs)}); ran: {', '.join(ran) or 'none'}.", ""]


def render_report(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    stats = json.loads((run_dir / "stats.json").read_text())
    out = [f"# tidewright run `{run_dir.name}`", ""]
    run = stats.get("run", {})
    out += [f"Config: {_code(run.get('config'))}; source: {_code(run.get('source'))}; teacher: {stats.get('generate', {}).get('teacher')}.", ""]
    out += stages_reused_section(stats.get("stages") or {})

    out += ["## Funnel", ""]
    ing, stg = stats.get("ingest", {}), stats.get("stage", {})
    docs = stats.get("documents")
    if docs:  # the documents source: files chunked into sections
        rows = [["documents", docs["files"], f"re-chunked {len(docs['rechunked'])} (changed or new), unchanged "
                 f"{len(docs['reused'])}, removed {len(docs['removed'])}"],
                ["sections", docs["sections"], f"{docs['chunks']} chunks with text (chunk_chars {docs.get('chunk_chars')}, "
                 f"overlap {docs.get('overlap_chars')})"]]
    else:
        rows = [
            ["AIS rows read", ing["rows"], f"{ing.get('malformed', 0)} malformed lines quarantined"],
            ["positions staged", stg["kept"], ", ".join(f"{k}: {v}" for k, v in stg["rejected"].items()) or "none"],
        ]
        for name, n in stats["facts"]["counts"].items():
            rows.append([f"facts: {name}", n, ""])
    seeds = stats["seeds"]
    edge = f"{seeds['unanswerable']} edge cases ({', '.join(f'{k} {v}' for k, v in seeds['edge_cases'].items())})" \
        if "edge_cases" in seeds else f"{seeds['unanswerable']} unanswerable"
    rows.append(["seed questions", seeds["seeds"], f"from {seeds['candidates']} candidates; {edge}; "
                 f"{seeds.get('dialogues', 0)} multi-turn dialogues"])
    gen, pub = stats["generate"], stats["publish"]
    rows.append(["examples generated", gen["generated"], f"teachers {gen['teacher']}; "
                 f"{gen.get('rejected', 0)} seeds quarantined by the teacher stage"])
    rows.append(["added to the dataset", pub.get("added", pub["published"]), "after the quality gate (below)"])
    if pub.get("carried"):
        left = [f"{pub[k]} {why}" for k, why in (("held_out_carried", "left as outside split.time_cut"),
                                                ("leak_removed_carried", "left as near-copies across the split"))
                if pub.get(k)]
        rows.append(["carried from the previous version", pub["carried"], f"version `{pub.get('parent')}`"
                     + (f" ({'; '.join(left)})" if left else "")])
    unit, n_train, n_eval = (("sections", pub["train_sections"], pub["eval_sections"]) if "train_sections" in pub
                             else ("vessels", pub["train_vessels"], pub["eval_vessels"]))
    rows.append(["published", pub["published"], f"train {pub['train_examples']} ({n_train} {unit}), eval {pub['eval_examples']} ({n_eval} {unit})"])
    out += [_table(["stage", "count", "detail"], rows), ""]
    if stats.get("review_import"):
        r = stats["review_import"]
        out += [f"Human review (last import): accepted {r.get('accepted', 0)}, rejected {r.get('rejected', 0)} (moved to "
                f"quarantine, stage review), edited {r.get('edited', 0)}; `published` counts the dataset after it.", ""]
    out += quality_gate_section(stats, run_dir)
    bal = funnel_balance(stats)
    mark = "balanced" if bal["balanced"] else "DOES NOT BALANCE"
    out += [f"Check: seed questions {bal['seeds']} = generated {bal['generated']} + quarantined by the teacher "
            f"stage {bal['teacher_rejected']}; generated {bal['generated']} = added {bal['kept']} + quarantined by "
            f"the gate {bal['quarantined']} ({mark}). Every rejected row is in "
            "`dataset/quarantine.parquet` with its stage and reason.", ""]
    examples_path = run_dir / "dataset" / "examples.parquet"
    published = None
    if examples_path.exists():
        published = pd.read_parquet(examples_path)
        if "turns" not in published:
            published = None
    out += generation_section(gen, seeds, published)
    if gen.get("planted_errors"):
        out += [f"Offline teacher planted {gen['planted_errors']} wrong values (teacher.corrupt_share); "
                f"the grounding gate caught {stats['validate']['planted_errors_caught']}.", ""]

    files = ing.get("files") or {}
    if files:
        out += ["## Ingest", "", _table(["file", "records in", "loaded", "quarantined at ingest"],
                [[_code(Path(f).name), v["rows_in"], v["loaded"], v["quarantined"]] for f, v in files.items()]), ""]
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

    out += _gate_section(stats.get("gate"))
    if "train" in stats:
        t = stats["train"]
        out += ["## Training", "",
                f"Student `{t['base_model']}`; method {t['method']} on {t['device']}; {t['steps']} steps over "
                f"{t['examples']} of {pub['train_examples']} train examples"
                f"{' (the rest exceed train.max_length and were skipped)' if t['examples'] < pub['train_examples'] else ''}"
                f" in {t['seconds']:.1f} s; train loss {t['train_loss']:.3f}; "
                f"eval loss {_score(t.get('eval_loss'))}.", ""]
        if t.get("eval_losses"):
            out += ["Eval loss during training: " + ", ".join(f"step {s}: {v:.3f}" for s, v in t["eval_losses"]) + ".", ""]
        if t.get("merged_dir"):
            out += [f"Merged 16-bit model: `{t['merged_dir']}`.", ""]
    results_path = run_dir / "eval" / "results.json"
    if results_path.exists():
        out += _evaluation_section(json.loads(results_path.read_text()), run_dir / "plots")

    if docs:
        out += ["## Files", "",
                "- `dataset/train.jsonl`, `dataset/eval.jsonl`: chat examples (`messages`), split by document section",
                "- `dataset/examples.parquet`: kept examples with provenance (source file, section id, character span, file digest, teacher, seed)",
                "- `dataset/quarantine.parquet`: every rejected example with its stage and reason",
                "- `documents/sections.jsonl`, `documents/chunks.jsonl`: the corpus's sections (hierarchy path, span) and chunks",
                "- `eval/results.json`, `eval/lm_eval_task/`, `plots/*.png`, `review/`: as for every run", ""]
        return "\n".join(out)
    out += ["## Files", "",
            "- `dataset/train.jsonl`, `dataset/eval.jsonl`: chat examples (`messages`), split by MMSI",
            "- `dataset/examples.parquet`: kept examples with provenance (sql file + digest, params, source-row hash, teacher, seed)",
            "- `dataset/quarantine.parquet`: every rejected AIS row and example with its stage and reason",
            "- `dataset/manifest.json`: counts, vessels per split, the version (line, parent, carried, added), the leak check, file sha256s",
            "- `plots/*.png`: the quality-gate funnel, the question mix before/after balancing, the similarity histogram, the evaluation scores",
            "- `review/`: the stratified sample for human review (JSONL, CSV, instructions); import decisions with `tidewright review-import`",
            "- `facts/*.parquet`, `staged/positions/` (the day files this run touched, hive-partitioned), `warehouse.duckdb`: the computed facts and cleaned positions",
            "- `eval/results.json`, `eval/lm_eval_task/`: scores of base, tuned and teacher, the cost ratio, and the lm-eval task to re-run by hand",
            "- `eval/<model>.predictions.jsonl`: every scored item with the prompt, the model's answer and its scores", ""]
    return "\n".join(out)


EVAL_MODELS = ("base", "tuned", "teacher")


def _gate_section(gate: dict[str, Any] | None) -> list[str]:
    if not gate:
        return []
    out = ["## Incremental gate", ""]
    if "skipped" in gate:
        return out + [f"Skipped: {gate['skipped']}.", ""]
    verdict = "passed: training went on to the full dataset" if gate["passed"] else (
        "**stopped**: the tuned student did not beat the base by the margin; the full dataset was not trained")
    out += [f"Trained {gate['steps']} steps on the first {gate['examples']} examples; {gate['metric']} base "
            f"{_score(gate['base'])} -> tuned {_score(gate['tuned'])} (gain {_score(gate['gain'])}, margin "
            f"{gate['margin']}): {verdict}.", ""]
    rows = [[cat, _score(g), "n/a" if g is None else ("yes" if g >= gate["margin"] else "NO")]
            for cat, g in sorted(gate["gain_per_category"].items())]
    out += [_table(["category", f"{gate['metric']} gain", "beats base by margin"], rows), ""]
    if gate["failed_categories"]:
        out += [f"Categories that failed: {', '.join(gate['failed_categories'])}.", ""]
    return out


def _evaluation_section(res: dict[str, Any], plots: Path) -> list[str]:
    models = [m for m in EVAL_MODELS if m in res]
    metrics = res.get("metrics", ["exact_match", "token_f1"])
    out = ["## Evaluation (lm-eval)", "",
           f"Task `{res['task']}` over the eval split (limit {res['limit']}); the same chat template as training. "
           "numeric_match: every number and time the answer must state, within the fact's tolerance, and no number that "
           "neither the reference answer nor the question states (items with values); "
           "correctly_refused: unanswerable items answered as such; false_refusal: answerable items refused.", ""]
    label = {"teacher": f"teacher ({res['teacher'].get('name')}, {res['teacher'].get('model')})"} if "teacher" in res else {}
    out.append(_table(["model", *metrics, "n"], [
        [label.get(m, m), *[_score(res[m].get(k)) for k in metrics], res[m]["n"]] for m in models
    ]))
    if "teacher_note" in res:
        out += ["", f"Teacher not scored: {res['teacher_note']}."]
    for breakdown, title in (("per_category", "category"), ("per_difficulty", "difficulty")):
        groups = sorted(res["base"].get(breakdown, {}))
        if not groups:
            continue
        headers = [title] + [f"{m} {k}" for k in ("token_f1", "numeric_match") for m in models] + ["n"]
        rows = [[g, *[_score(res[m].get(breakdown, {}).get(g, {}).get(k)) for k in ("token_f1", "numeric_match") for m in models],
                 res["base"][breakdown][g]["n"]] for g in groups]
        out += ["", f"Per {title}:", "", _table(headers, rows)]
    out.append("")
    if res["base"].get("per_category"):
        from tasks.plots import plot_eval_scores

        plot_eval_scores(res, plots / "eval_scores.png")
        out += ["![evaluation](plots/eval_scores.png)", ""]
    cost = res.get("cost")
    if cost:
        ratio = "n/a" if cost["ratio"] is None else f"{cost['ratio']:,}x"
        out += ["## Cost per 1,000 queries", "", _table(["", "USD per 1,000 queries", "basis"], [
            ["teacher", f"{cost['teacher_usd_per_1k']:.4f}", cost["teacher_basis"]],
            ["student", f"{cost['student_usd_per_1k']:.4f}", cost["student_basis"]],
        ]), "", f"The teacher costs **{ratio}** the student per query (the reference reports 261x for GPT-4o "
            "against a fine-tuned 7B on a GPU).", ""]
    return out


def write_report(run_dir: Path) -> Path:
    path = Path(run_dir) / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text(render_report(run_dir))
    tmp.replace(path)
    return path

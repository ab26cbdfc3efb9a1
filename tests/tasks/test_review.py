"""Human review round trip on a real published dataset: stratified export, decisions back in."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.artifacts import write_jsonl
from tasks.config import ReviewConfig, SplitConfig
from tasks.errors import InputError
from tasks.publish import publish_dataset
from tasks.review import CSV_COLUMNS, allocate, export_review_sample, import_review, read_decisions
from tasks.seeds import _followup
from tests.conftest import REPO
from tests.tasks.factories import example, movement_seed, port_seed, unanswerable_seed

CONFIG = str(REPO / "pipeline_configs" / "maritime_ais.yaml")
# every stratum of the fixture below, the dialogue in a stratum of its own
STRATA = ["category", "difficulty", "answerable", "turns"]


def publish_small_dataset(run_dir: Path) -> Path:
    """A dataset published by tasks.publish: 30 movement, 12 port calls, 5 unanswerable, 1 dialogue."""
    rows = [example(movement_seed(mmsi=366000000 + i, hour=i % 20)) for i in range(30)]
    rows += [example(port_seed("dwell", mmsi=366100000 + i)) for i in range(12)]
    rows += [example(unanswerable_seed(367123000 + i)) for i in range(5)]
    dialogue = movement_seed(mmsi=366200000)
    dialogue.followups = [_followup(movement_seed(form="max_speed", mmsi=366200000))]
    rows.append(example(dialogue))
    for i, r in enumerate(rows):
        r["id"] = f"ex{i:03d}"
    write_jsonl(rows, run_dir / "work" / "deduped.jsonl")
    pd.DataFrame([{"stage": "validate", "reason": "ungrounded_number", "record_id": "x", "mmsi": "1",
                   "payload": "{}"}]).to_parquet(run_dir / "work" / "q.parquet")
    publish_dataset(run_dir / "work" / "deduped.jsonl", [run_dir / "work" / "q.parquet"], SplitConfig(eval_share=0.3),
                    run_dir / "dataset")
    return run_dir / "dataset"


@pytest.fixture
def dataset(tmp_path) -> Path:
    return publish_small_dataset(tmp_path / "run")


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


def test_allocation_is_proportional_with_a_floor_per_stratum():
    quotas = allocate({("a",): 600, ("b",): 300, ("c",): 90, ("d",): 10}, 0.05, 1)
    assert quotas == {("a",): 30, ("b",): 15, ("c",): 5, ("d",): 1}  # 50 = 5 % of 1,000, remainders to the largest
    assert allocate({("a",): 3, ("b",): 1}, 0.05, 2) == {("a",): 2, ("b",): 1}  # the floor never exceeds a cell


def test_export_is_stratified_deterministic_and_readable(dataset, tmp_path):
    cfg = ReviewConfig(share=0.1, strata=STRATA, context_lines=1)
    stats = export_review_sample(dataset, cfg, tmp_path / "review")
    examples = pd.read_parquet(dataset / "examples.parquet")
    cells = examples.groupby(["category", "difficulty", "answerable", "turns"]).size()
    assert len(stats["strata"]) == len(cells) == 4
    assert all(s["sampled"] >= 1 for s in stats["strata"].values())
    assert stats["strata"]["movement/medium/answerable/1"] == {"unreviewed": 30, "sampled": 3}
    assert stats["unanswerable"] >= 1 and stats["answerable"] >= 1
    rows = read_csv(tmp_path / "review" / "review_sample.csv")
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == stats["sampled"]
    assert {r["id"] for r in rows} == {r["id"] for r in jsonl(tmp_path / "review" / "review_sample.jsonl")}
    dialogue = next(r for r in rows if r["turns"] == "2")
    assert dialogue["answer"].count("\n---\n") == 1 and dialogue["question"].count("\n---\n") == 1
    assert "turn 2: max sog kn: 13.1 knots (must be stated)" in dialogue["computed_values"]
    refusal = next(r for r in rows if r["answerable"] == "no")
    assert refusal["computed_values"].startswith("Unanswerable on purpose")
    assert all("2 more lines (full records in review_sample.jsonl)" in r["context"] for r in rows)
    assert all(not r["decision"] and not r["edited_answer"] for r in rows)
    assert "---" in (tmp_path / "review" / "README.md").read_text()

    again = export_review_sample(dataset, cfg, tmp_path / "again")
    assert again == {**stats, "out_dir": str(tmp_path / "again")}
    assert folder_digest(tmp_path / "again") == folder_digest(tmp_path / "review")
    other_seed = export_review_sample(dataset, cfg.model_copy(update={"seed": 1}), tmp_path / "seed1")
    assert {r["id"] for r in read_csv(tmp_path / "seed1" / "review_sample.csv")} != {r["id"] for r in rows}
    assert other_seed["sampled"] == stats["sampled"]


def fill(rows: list[dict[str, str]], decisions: dict[str, tuple[str, str, str]]) -> list[dict[str, str]]:
    return [{**r, **dict(zip(("decision", "reason", "edited_answer"), decisions.get(r["id"], ("", "", ""))))} for r in rows]


def test_round_trip_applies_every_decision_and_reimport_is_a_no_op(dataset, tmp_path):
    (dataset / "notes.txt").write_text("kept as is")  # a file the review knows nothing about
    columns_before = set(pd.read_parquet(dataset / "examples.parquet").columns)
    cfg = ReviewConfig(share=0.2, strata=STRATA)
    export_review_sample(dataset, cfg, tmp_path / "review")
    rows = read_csv(tmp_path / "review" / "review_sample.csv")
    movement = [r for r in rows if r["category"] == "movement" and r["turns"] == "1" and r["answerable"] == "yes"]
    accept1, accept2, reject, edit_ok, edit_bad = (r["id"] for r in movement[:5])
    dialogue = next(r for r in rows if r["turns"] == "2")
    mmsi_ok, mmsi_bad = (next(r["vessel"].split()[0] for r in rows if r["id"] == i) for i in (edit_ok, edit_bad))
    decisions = {
        accept1: ("accept", "", ""),
        accept2: ("Accept ", "checked against the records", ""),
        reject: ("reject", "the question repeats the context", ""),
        edit_ok: ("edit", "clearer", f"Vessel {mmsi_ok} averaged 12.3 knots over ground in the hour asked about."),
        edit_bad: ("edit", "", f"Vessel {mmsi_bad} averaged 14.9 knots."),  # the computed mean is 12.34
        dialogue["id"]: ("edit", "", "It averaged 12.3 knots.\n---\nIts top speed was 13.1 knots."),
    }
    filled = write_csv(tmp_path / "decisions.csv", fill(rows, decisions))
    before = folder_digest(dataset)

    with pytest.raises(InputError) as err:
        import_review(dataset, filled, cfg)
    message = str(err.value)
    assert "1 bad row(s), nothing was imported" in message and f"(id {edit_bad}): the edited answer fails the check" in message
    assert "ungrounded_number (14.9 speed_kn matches no computed value)" in message and "\n" not in message
    assert folder_digest(dataset) == before

    decisions[edit_bad] = ("edit", "", f"Vessel {mmsi_bad} averaged 12.3 knots.")
    filled = write_csv(tmp_path / "decisions.csv", fill(rows, decisions))
    original = pd.read_parquet(dataset / "examples.parquet").set_index("id")
    manifest_before = json.loads((dataset / "manifest.json").read_text())
    stats = import_review(dataset, filled, cfg)
    assert (stats["accepted"], stats["rejected"], stats["edited"], stats["forced_edits"]) == (2, 1, 3, 0)
    assert stats["not_reviewed"] == len(rows) - 6 and stats["changed"]

    examples = pd.read_parquet(dataset / "examples.parquet").set_index("id")
    assert reject not in examples.index and len(examples) == len(original) - 1
    assert columns_before <= set(pd.read_parquet(dataset / "examples.parquet").columns)
    assert examples.loc[[accept1, accept2], "review"].tolist() == ["accepted", "accepted"]
    assert examples.at[accept2, "review_reason"] == "checked against the records"
    edited = examples.loc[edit_ok]
    assert edited["review"] == "edited" and edited["review_check"] == "passed"
    assert edited["original_answer"] == original.at[edit_ok, "answer"]
    assert json.loads(edited["messages"])[-1]["content"] == decisions[edit_ok][2] == edited["answer"]
    assert [m["content"] for m in json.loads(examples.at[dialogue["id"], "messages"]) if m["role"] == "assistant"] == [
        "It averaged 12.3 knots.", "Its top speed was 13.1 knots."]
    assert examples.at[dialogue["id"], "original_answer"].count("\n---\n") == 1
    assert examples.drop(index=[accept1, accept2, edit_ok, edit_bad, dialogue["id"]])["review"].isna().all()

    train, evals = jsonl(dataset / "train.jsonl"), jsonl(dataset / "eval.jsonl")
    published = {r["id"]: r for r in train + evals}
    assert reject not in published and len(published) == len(examples)
    assert published[edit_ok]["messages"][-1]["content"] == decisions[edit_ok][2]
    assert published[accept1]["messages"] == json.loads(original.at[accept1, "messages"])

    quarantine = pd.read_parquet(dataset / "quarantine.parquet")
    rejected = quarantine[quarantine["stage"] == "review"]
    assert rejected[["reason", "record_id"]].values.tolist() == [["review_rejected", reject]]
    payload = json.loads(rejected["payload"].iloc[0])
    assert payload["rejection_detail"] == "the question repeats the context" and payload["answer"] and payload["question"]
    assert (quarantine["stage"] == "validate").sum() == 1  # the earlier quarantine is still there

    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["examples"] == len(examples)
    assert manifest["splits"] == {"train": len(train), "eval": len(evals)}
    assert manifest["quarantine"] == {"review/review_rejected": 1, "validate/ungrounded_number": 1}
    assert manifest["files"] == {k: v for k, v in folder_digest(dataset).items() if k != "manifest.json"}
    assert "notes.txt" in manifest["files"] and (dataset / "notes.txt").read_text() == "kept as is"
    assert set(manifest_before) <= set(manifest)  # keys publish wrote are kept
    imported = manifest["review"]["imports"]
    assert [(i["sha256"], i["accepted"], i["rejected"], i["edited"]) for i in imported] == [
        (hashlib.sha256(filled.read_bytes()).hexdigest(), 2, 1, 3)]
    assert manifest["review"]["totals"] == {"accepted": 2, "edited": 3, "forced_edits": 0, "rejected": 1}
    assert not list(dataset.parent.glob("dataset.*"))

    after = folder_digest(dataset)
    again = import_review(dataset, filled, cfg)
    assert not again["changed"] and again["unchanged"] == 6
    assert folder_digest(dataset) == after

    # the next export offers only examples nobody has reviewed
    export_review_sample(dataset, cfg.model_copy(update={"share": 1.0}), tmp_path / "next")
    offered = {r["id"] for r in read_csv(tmp_path / "next" / "review_sample.csv")}
    assert offered and not offered & set(decisions)


def test_forced_edit_is_kept_and_marked(dataset, tmp_path):
    export_review_sample(dataset, ReviewConfig(share=0.2), tmp_path / "review")
    row = next(r for r in read_csv(tmp_path / "review" / "review_sample.csv") if r["category"] == "movement" and r["answerable"] == "yes")
    filled = write_csv(tmp_path / "d.csv", fill([row], {row["id"]: ("edit", "reviewer measured it", "It averaged 14.9 knots.")}))
    stats = import_review(dataset, filled, ReviewConfig(force_edits=True))
    assert stats["edited"] == stats["forced_edits"] == 1
    ex = pd.read_parquet(dataset / "examples.parquet").set_index("id").loc[row["id"]]
    assert ex["review_check"].startswith("failed, kept by the reviewer: ungrounded_number")
    assert ex["answer"] == "It averaged 14.9 knots."
    assert json.loads((dataset / "manifest.json").read_text())["review"]["totals"]["forced_edits"] == 1


def test_a_bad_decisions_file_is_one_error_listing_every_bad_row(dataset, tmp_path):
    export_review_sample(dataset, ReviewConfig(share=0.2, strata=STRATA), tmp_path / "review")
    rows = read_csv(tmp_path / "review" / "review_sample.csv")
    dialogue = next(r for r in rows if r["turns"] == "2")
    singles = [r for r in rows if r["turns"] == "1"]
    bad = fill(singles[:5] + [dialogue], {
        singles[0]["id"]: ("maybe", "", ""),
        singles[1]["id"]: ("reject", "", ""),
        singles[2]["id"]: ("edit", "", ""),
        singles[3]["id"]: ("accept", "", "a new answer"),
        dialogue["id"]: ("edit", "", "only one turn 12.3 knots"),
    })
    bad[4] = {**bad[4], "id": "no-such-id", "decision": "accept"}
    bad.append({**bad[0], "decision": "accept"})  # the same id twice
    before = folder_digest(dataset)
    with pytest.raises(InputError) as err:
        import_review(dataset, write_csv(tmp_path / "bad.csv", bad), ReviewConfig())
    message = str(err.value)
    assert "7 bad row(s), nothing was imported" in message
    for expected in ("row 2 (id", "decision 'maybe' is not accept, reject, edit or blank", "row 3 (id",
                     "reject needs a reason", "row 4 (id", "edit needs the corrected answer", "row 5 (id",
                     "accept with an edited_answer", "row 6 (id no-such-id): unknown id",
                     "edited_answer has 1 turn(s), the dialogue has 2", "row 8 (id", "the same id is on row 2"):
        assert expected in message
    assert folder_digest(dataset) == before

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "nocols.csv").write_text("example,verdict\nex000,accept\n")
    (tmp_path / "d.txt").write_text("x")
    for path, expected in ((tmp_path / "empty.csv", "is empty"), (tmp_path / "nocols.csv", "lacks the column(s) ['id', 'decision']"),
                           (tmp_path / "d.txt", "must be .csv or .jsonl"), (tmp_path / "none.csv", "does not exist")):
        with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            read_decisions(path)


def test_jsonl_decisions_and_spreadsheet_semicolons(dataset, tmp_path):
    export_review_sample(dataset, ReviewConfig(share=0.2, strata=STRATA), tmp_path / "review")
    sample = jsonl(tmp_path / "review" / "review_sample.jsonl")
    dialogue = next(r for r in sample if r["turns"] == 2)
    single = next(r for r in sample if r["turns"] == 1 and r["answerable"])
    write_jsonl([{**dialogue, "decision": "edit", "edited_answer": ["Mean 12.3 knots.", "Top 13.1 knots."]},
                 {**single, "decision": "reject", "reason": "too easy", "reviewer": "ak"}], tmp_path / "d.jsonl")
    stats = import_review(dataset, tmp_path / "d.jsonl", ReviewConfig())
    assert (stats["edited"], stats["rejected"]) == (1, 1)
    payload = json.loads(pd.read_parquet(dataset / "quarantine.parquet").query("stage == 'review'")["payload"].iloc[0])
    assert payload["reviewer"] == "ak" and payload["review"] == "rejected"
    # a spreadsheet in a comma-decimal locale saves with semicolons
    (tmp_path / "semi.csv").write_text(f"id;decision;reason\n{single['id']};reject;too easy\n{dialogue['id']};accept;\n")
    stats = import_review(dataset, tmp_path / "semi.csv", ReviewConfig())
    assert (stats["unchanged"], stats["accepted"]) == (1, 1)  # the rejection was already applied


def test_export_keeps_a_filled_in_sample_until_it_is_imported(dataset, tmp_path):
    out = tmp_path / "review"
    export_review_sample(dataset, ReviewConfig(share=0.2), out)
    rows = read_csv(out / "review_sample.csv")
    write_csv(out / "review_sample.csv", fill(rows, {rows[0]["id"]: ("accept", "", "")}))
    with pytest.raises(InputError, match="holds 1 decision\\(s\\) not yet imported"):
        export_review_sample(dataset, ReviewConfig(share=0.2), out)
    import_review(dataset, out / "review_sample.csv", ReviewConfig())
    stats = export_review_sample(dataset, ReviewConfig(share=0.2), out)
    assert rows[0]["id"] not in {r["id"] for r in read_csv(out / "review_sample.csv")} and stats["sampled"]


def test_cli_round_trip(prefect_server, tmp_path, capsys):
    from flows.cli import main

    run_dir = tmp_path / "run"
    dataset = publish_small_dataset(run_dir)
    assert main(["review-export", "--config", CONFIG, "--run-dir", str(run_dir), "--set", "review.share=0.2"]) == 0
    assert "Review sample:" in capsys.readouterr().out
    rows = read_csv(run_dir / "review" / "review_sample.csv")
    target = next(r for r in rows if r["category"] == "movement" and r["answerable"] == "yes")
    port = next(r for r in rows if r["category"] == "port_activity")
    filled = write_csv(tmp_path / "d.csv", fill(rows, {port["id"]: ("reject", "wrong port", ""),
                                                       target["id"]: ("edit", "", "It averaged 14.9 knots.")}))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "review-import", "--file", str(filled), "--run-dir", str(run_dir)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "error: decisions file" in out.stderr and "--force-edits" in out.stderr
    assert main(["review-import", "--config", CONFIG, "--file", str(filled), "--run-dir", str(run_dir), "--force-edits"]) == 0
    assert "rejected 1, edited 1 (forced 1)" in capsys.readouterr().out
    examples = pd.read_parquet(dataset / "examples.parquet").set_index("id")
    assert port["id"] not in examples.index and examples.at[target["id"], "review"] == "edited"
    assert main(["review-import", "--config", CONFIG, "--file", str(filled), "--run-dir", str(run_dir)]) == 0
    assert "already in the dataset; nothing changed" in capsys.readouterr().out
    assert main(["review-import", "--config", CONFIG, "--run-dir", str(run_dir)]) == 2
    assert "review-import needs --file" in capsys.readouterr().err


def test_a_rejection_stays_rejected_in_later_versions_and_only_the_newest_version_takes_decisions(tmp_path):
    from tasks.config import DedupConfig
    from tasks.dedup import dedup_examples
    from tasks.versions import dedup_reference, latest_version

    runs = tmp_path / "runs"
    rows = [example(movement_seed(mmsi=366000000 + i, hour=i % 20)) for i in range(12)]
    for i, r in enumerate(rows):
        r["id"] = f"ex{i:03d}"
    write_jsonl(rows, tmp_path / "v1.jsonl")
    publish_dataset(tmp_path / "v1.jsonl", [], SplitConfig(eval_share=0.3), runs / "r1" / "dataset",
                    version={"lineage": "ais", "run_id": "r1"})
    v1 = runs / "r1" / "dataset"
    export_review_sample(v1, ReviewConfig(share=0.5), runs / "r1" / "review")
    sample = read_csv(runs / "r1" / "review" / "review_sample.csv")
    gone = sample[0]["id"]
    import_review(v1, write_csv(tmp_path / "d.csv", fill(sample, {gone: ("reject", "wrong vessel", "")})), ReviewConfig())

    # the next night: the same examples come back from the teacher; the rejected one is not re-added
    write_jsonl(rows, tmp_path / "again.jsonl")
    reference = dedup_reference(latest_version(runs, "ais"))
    assert gone in {r["id"] for r in reference if r.get("origin") == "rejected in review"}
    stats = dedup_examples(tmp_path / "again.jsonl", DedupConfig(), tmp_path / "kept.jsonl", tmp_path / "q.parquet", reference)
    assert stats["kept"] == 0 and stats["published_duplicates"] == len(rows)
    publish_dataset(tmp_path / "kept.jsonl", [], SplitConfig(eval_share=0.3), runs / "r2" / "dataset", v1,
                    {"lineage": "ais", "run_id": "r2"})
    v2 = pd.read_parquet(runs / "r2" / "dataset" / "examples.parquet")
    assert gone not in set(v2.id) and len(v2) == len(rows) - 1
    q2 = pd.read_parquet(runs / "r2" / "dataset" / "quarantine.parquet")
    assert q2.loc[q2.stage == "review", "record_id"].tolist() == [gone]  # the decision travels with the line
    assert gone in {r["id"] for r in dedup_reference(runs / "r2" / "dataset") if r.get("origin")}

    # decisions for r1 would never reach r2, which already carries r1's examples: refused, with where to go
    other = next(r["id"] for r in sample[1:])
    with pytest.raises(InputError, match=r"not the newest version of dataset line ais.*--run-dir .*r2"):
        import_review(v1, write_csv(tmp_path / "d2.csv", fill(sample, {other: ("accept", "", "")})), ReviewConfig())


def test_a_cell_that_would_run_as_a_formula_stays_text_in_the_spreadsheet_and_the_round_trip_works(tmp_path):
    run_dir = tmp_path / "run"
    rows = [example(movement_seed(mmsi=366000000 + i, hour=i % 20)) for i in range(12)]
    formula = '=HYPERLINK("http://evil.example","click")'
    for i, r in enumerate(rows):
        r["id"] = f"ex{i:03d}"
        r["messages"][-1]["content"] = formula + " " + r["messages"][-1]["content"]
    write_jsonl(rows, run_dir / "work" / "deduped.jsonl")
    publish_dataset(run_dir / "work" / "deduped.jsonl", [], SplitConfig(eval_share=0.3), run_dir / "dataset")
    cfg = ReviewConfig(share=1.0, strata=["category"])
    export_review_sample(run_dir / "dataset", cfg, run_dir / "review")
    exported = read_csv(run_dir / "review" / "review_sample.csv")
    assert exported and all(r["answer"].startswith("'" + formula) for r in exported)
    assert not any(v.startswith(("=", "+", "-", "@")) for r in exported for v in r.values())
    # the JSONL sample keeps the text as it is
    assert all(r["answers"][-1].startswith(formula) for r in jsonl(run_dir / "review" / "review_sample.jsonl"))
    for r in exported:
        r["decision"] = "accept"
    stats = import_review(run_dir / "dataset", write_csv(tmp_path / "d.csv", exported), cfg)
    assert stats["accepted"] == len(exported)

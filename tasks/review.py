"""Human review round trip: a stratified sample of a dataset version goes out to reviewers (JSONL,
and CSV for a spreadsheet), their decisions come back into the version.

Decisions: `accept` (the example stays, marked review="accepted"), `reject` with a reason (the
example leaves train/eval/examples for quarantine, stage "review", reason "review_rejected") and
`edit` (the assistant turns are replaced by the reviewer's text, which must pass the validators the
teacher's text passed: grounding, plausibility, triviality; the original is kept in
`original_answer`). A blank decision means not reviewed. In `edited_answer` and `original_answer`
the turns of a dialogue are separated by a line holding only `---`.

An import checks every row before it changes anything, rewrites the dataset folder atomically and
is idempotent: a decision already in the dataset changes nothing, so importing the same file twice
leaves the folder as the first import left it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from tasks.artifacts import QUARANTINE_COLUMNS, quarantine_row, replace_dir, write_jsonl
from tasks.config import ReviewConfig, ValidateConfig
from tasks.errors import ConfigError, InputError
from tasks.publish import finish_manifest, sha256_file
from tasks.validate import RunNames, run_names, validate_example

DECISIONS = ("accept", "reject", "edit")
TURN_SEPARATOR = "---"
SAMPLE_CSV = "review_sample.csv"
SAMPLE_JSONL = "review_sample.jsonl"
CSV_COLUMNS = (
    "id", "split", "category", "difficulty", "form", "answerable", "turns", "vessel", "context", "question",
    "answer", "computed_values", "decision", "reason", "edited_answer", "reviewer",
)
# what an import writes on each reviewed example (examples.parquet); the rejected ones carry them in quarantine
REVIEW_FIELDS = ("review", "review_reason", "reviewer", "reviewed_at", "original_answer", "review_check")
# the files an import rewrites; anything else in the dataset folder is carried over unchanged
REWRITTEN = ("train.jsonl", "eval.jsonl", "examples.parquet", "quarantine.parquet", "manifest.json")
UNIT_WORDS = {
    "speed_kn": "knots", "distance_nm": "nautical miles", "minutes": "minutes", "hours": "hours",
    "degrees": "degrees", "metres": "metres",
}


def _plain(value: Any) -> Any:
    """A parquet cell as plain Python (lists, not arrays; None, not NaN), so it serialises as it was."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _record(row: pd.Series) -> dict[str, Any]:
    """An examples.parquet row as an example dict (messages as a list again)."""
    record = {k: _plain(v) for k, v in row.items()}
    if isinstance(record.get("messages"), str):
        record["messages"] = json.loads(record["messages"])
    return record


def _turns(messages: list[dict[str, Any]], role: str) -> list[str]:
    return [m["content"] for m in messages if m["role"] == role]


def _questions(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(the AIS records of the first user turn, the question of every turn)."""
    users = _turns(messages, "user")
    context, sep, first = users[0].rpartition("\n\nQuestion:")
    if not sep:
        context, first = "", users[0]
    return context, [first.strip()] + [u.strip() for u in users[1:]]


def _joined(turns: list[str]) -> str:
    return f"\n{TURN_SEPARATOR}\n".join(turns)


def split_turns(text: str) -> list[str]:
    """A reviewer's multi-turn text: the turns are separated by a line holding only '---'."""
    turns, current = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip() == TURN_SEPARATOR:
            turns.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    turns.append("\n".join(current).strip())
    return turns


def _short_context(context: str, lines: int) -> str:
    if lines == 0 or not context:
        return ""
    rows = context.splitlines()
    if len(rows) <= lines:
        return context
    return "\n".join(rows[:lines] + [f"... {len(rows) - lines} more lines (full records in {SAMPLE_JSONL})"])


def _value_words(g: dict[str, Any]) -> str:
    value, kind = g["value"], g["kind"]
    if kind == "time":
        ts = pd.Timestamp(value)
        value = f"{ts:%H:%M} UTC on {ts:%Y-%m-%d}"
    elif isinstance(value, float):
        value = f"{value:.0f}" if kind == "degrees" else f"{value:.1f}"
    unit = UNIT_WORDS.get(kind)
    return f"{value} {unit}" if unit else str(value)


def computed_values(grounding: list[dict[str, Any]], answerable: bool) -> str:
    """The values the SQL computed, one line each, as a reviewer checks them."""
    lines = [] if answerable else ["Unanswerable on purpose: the answer must say the data is insufficient."]
    turns = max((int(g.get("turn", 0)) for g in grounding), default=0) + 1
    for g in grounding:
        name = g["name"].replace("_", " ")
        if g["kind"] == "distractor":
            lines.append(f"{name}: {g['value']} (a wrong value: must NOT be named)")
            continue
        where = f"turn {int(g.get('turn', 0)) + 1}: " if turns > 1 else ""
        flag = "must be stated" if g.get("required") else "may be stated"
        lines.append(f"{where}{name}: {_value_words(g)} ({flag})")
    return "\n".join(lines)


def _reviewed(frame: pd.DataFrame) -> pd.Series:
    if "review" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["review"].map(lambda v: isinstance(v, str) and v != "")


def allocate(sizes: dict[tuple, int], share: float, minimum: int) -> dict[tuple, int]:
    """Proportional allocation by largest remainder (the total is round(share x all)), then every
    cell raised to `minimum` (or to all it has)."""
    total = round(share * sum(sizes.values()))
    exact = {k: share * n for k, n in sizes.items()}
    out = {k: int(math.floor(v)) for k, v in exact.items()}
    by_remainder = sorted(sizes, key=lambda k: (-(exact[k] - out[k]), k))
    for k in by_remainder[: max(0, total - sum(out.values()))]:
        out[k] += 1
    return {k: min(sizes[k], max(out[k], minimum)) for k in sizes}


def _rank(seed: int, example_id: str) -> str:
    # a fixed place per example: the same sample for the same seed, however the rows are ordered
    return hashlib.sha256(f"{seed}|{example_id}".encode()).hexdigest()


def _imported_digests(dataset_dir: Path) -> set[str]:
    manifest_path = dataset_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return {i["sha256"] for i in (manifest.get("review") or {}).get("imports", [])}


def check_no_pending_decisions(out_dir: Path, dataset_dir: Path) -> None:
    """A sample a reviewer has filled in but not imported must not be overwritten by a new export."""
    imported = _imported_digests(dataset_dir)
    for name in (SAMPLE_CSV, SAMPLE_JSONL):
        path = out_dir / name
        if not path.exists() or sha256_file(path) in imported:
            continue
        try:
            filled = sum(1 for row in read_decisions(path) if row.decision)
        except InputError:
            continue  # not a decisions file we can read: nothing of ours to protect
        if filled:
            raise InputError(
                f"{path} holds {filled} decision(s) not yet imported; import them first "
                f"(tidewright review-import --file {path}) or move the file away, then export again"
            )


def _stratum_label(key: str, value: Any) -> str:
    return (key if value else f"not_{key}") if isinstance(value, bool) else str(value)


def stratified_sample(frame: pd.DataFrame, cfg: ReviewConfig) -> tuple[list[int], dict[str, dict[str, int]], int]:
    """Row labels of the sample (by category, then id), the strata with their sizes, and how many
    examples were not yet reviewed."""
    pool = frame[~_reviewed(frame)]
    cells: dict[tuple, list[int]] = {}
    for idx, values in zip(pool.index, pool[list(cfg.strata)].itertuples(index=False)):
        cells.setdefault(tuple(_stratum_label(k, _plain(v)) for k, v in zip(cfg.strata, values)), []).append(idx)
    quotas = allocate({k: len(v) for k, v in cells.items()}, cfg.share, cfg.min_per_stratum)
    ids = frame["id"].astype(str)
    picked = []
    for key in sorted(cells):
        picked += sorted(cells[key], key=lambda i: _rank(cfg.seed, ids[i]))[: quotas[key]]
    strata = {"/".join(k): {"unreviewed": len(cells[k]), "sampled": quotas[k]} for k in sorted(cells)}
    return sorted(picked, key=lambda i: (str(frame.at[i, "category"]), ids[i])), strata, len(pool)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (a vessel name "=HYPERLINK(...)") gets a
    leading apostrophe. Only display columns are affected: an import reads id, decision, reason,
    edited_answer and reviewer, which the export leaves empty or plain."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def export_review_sample(dataset_dir: Path, cfg: ReviewConfig, out_dir: Path) -> dict[str, Any]:
    """A stratified sample of the examples not yet reviewed: review_sample.jsonl, review_sample.csv
    and README.md (instructions) in out_dir."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    frame = pd.read_parquet(dataset_dir / "examples.parquet")
    missing = [k for k in cfg.strata if k not in frame.columns]
    if missing:
        raise ConfigError(f"review.strata: {missing} are not example fields; use fields of examples.parquet such as "
                          "category, difficulty, answerable, form")
    check_no_pending_decisions(out_dir, dataset_dir)
    picked, strata, unreviewed = stratified_sample(frame, cfg)
    sample = [_record(frame.loc[i]) for i in picked]

    jsonl_rows, csv_rows = [], []
    for ex in sample:
        context, questions = _questions(ex["messages"])
        answers = _turns(ex["messages"], "assistant")
        grounding = json.loads(ex["grounding"]) if isinstance(ex.get("grounding"), str) else ex.get("grounding") or []
        answerable = bool(ex.get("answerable", True))
        vessel = " ".join(str(v) for v in (ex.get("mmsi") or "", ex.get("vessel_name") or "") if v).strip()
        common = {"id": ex["id"], "split": ex.get("split"), "category": ex.get("category"),
                  "difficulty": ex.get("difficulty"), "form": ex.get("form"), "answerable": answerable,
                  "turns": len(answers)}
        jsonl_rows.append({**common, "messages": ex["messages"], "questions": questions, "answers": answers,
                           "computed_values": grounding, "decision": "", "reason": "", "edited_answer": "",
                           "reviewer": ""})
        csv_rows.append({**common, "answerable": "yes" if answerable else "no", "vessel": vessel,
                         "context": _short_context(context, cfg.context_lines), "question": _joined(questions),
                         "answer": _joined(answers), "computed_values": computed_values(grounding, answerable),
                         "decision": "", "reason": "", "edited_answer": "", "reviewer": ""})

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(jsonl_rows, out_dir / SAMPLE_JSONL)
    tmp = out_dir / (SAMPLE_CSV + ".tmp")
    # utf-8 with a byte-order mark: Excel then reads the file as UTF-8 (vessel names, degree signs)
    with open(tmp, "w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows([{k: spreadsheet_safe(v) for k, v in row.items()} for row in csv_rows])
    tmp.replace(out_dir / SAMPLE_CSV)
    tmp = out_dir / "README.md.tmp"
    tmp.write_text(reviewer_readme(dataset_dir, len(sample)))
    tmp.replace(out_dir / "README.md")
    return {"sampled": len(sample), "examples": len(frame), "unreviewed": unreviewed,
            "share_of_examples": round(len(sample) / len(frame), 4) if len(frame) else 0.0,
            "answerable": sum(1 for e in sample if e.get("answerable", True)),
            "unanswerable": sum(1 for e in sample if not e.get("answerable", True)),
            "strata": strata, "out_dir": str(out_dir)}


def reviewer_readme(dataset_dir: Path, n: int) -> str:
    return f"""# Review sample ({n} examples)

From the dataset in `{dataset_dir}`. Open `{SAMPLE_CSV}` in a spreadsheet (or edit
`{SAMPLE_JSONL}`), fill in one decision per row, save, and import it:

    tidewright review-import --file {SAMPLE_CSV} --run-dir <the run folder>

Each row is one example: the question a user asks about the AIS records (`context` shows the first
lines; the JSONL has them all), the assistant's answer, and `computed_values`: what the SQL
computed. Every number, time, MMSI and port in an answer must match a computed value.

| column | what to write |
|---|---|
| `decision` | `accept`, `reject` or `edit`; leave it blank for an example you did not review |
| `reason` | required for `reject` (why it is wrong); optional otherwise |
| `edited_answer` | required for `edit`: the full corrected answer. For a dialogue (`turns` > 1) write every turn, separated by a line holding only `{TURN_SEPARATOR}`, as in `answer` |
| `reviewer` | optional: your name or initials |

- `reject`: the example leaves train and eval and goes to quarantine with your reason.
- `edit`: your answer replaces the assistant's and is checked like the teacher's: numbers, times,
  vessels and ports must match the computed values (speeds and distances to 0.1, times to the
  minute), values must be physically plausible, the answer must not just repeat the question, and
  an unanswerable question's answer must say the data is insufficient. An edit that fails stops
  the import with the reason (nothing is changed); `--force-edits` keeps it, marked in
  `review_check`. The original answer is kept in `original_answer`.
- Rows you leave blank stay unreviewed and may be offered again in a later sample.
- Importing the same file again changes nothing. Leave `id` and the column names as they are;
  the other columns are ignored on import.
"""


@dataclass(frozen=True)
class DecisionRow:
    where: str                 # "row 3" (as a spreadsheet numbers it, header = row 1) or "line 3"
    id: str
    decision: str              # lower case; "" = not reviewed
    reason: str
    edited: str | list[str]    # a '---'-separated string, or (JSONL) a list of turns
    reviewer: str
    problem: str | None = None


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_decisions(path: Path) -> list[DecisionRow]:
    """Rows of a decisions file: the exported CSV (comma, semicolon or tab separated, as a
    spreadsheet saves it) or JSONL."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"decisions file {path} does not exist; pass the filled-in {SAMPLE_CSV} or {SAMPLE_JSONL}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InputError(f"decisions file {path} must be .csv or .jsonl (the exported {SAMPLE_CSV} or {SAMPLE_JSONL})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"decisions file {path} is not UTF-8 text; save it as 'CSV UTF-8'") from None
    if not text.strip():
        raise InputError(f"decisions file {path} is empty")
    rows: list[DecisionRow] = []
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                rows.append(DecisionRow(f"line {n}", "", "", "", "", "", "not valid JSON"))
                continue
            if not isinstance(obj, dict):
                rows.append(DecisionRow(f"line {n}", "", "", "", "", "", "not a JSON object"))
                continue
            edited = obj.get("edited_answer")
            edited = [_cell(t) for t in edited] if isinstance(edited, list) else _cell(edited)
            rows.append(DecisionRow(f"line {n}", _cell(obj.get("id")), _cell(obj.get("decision")).lower(),
                                    _cell(obj.get("reason")), edited, _cell(obj.get("reviewer"))))
        return rows
    header = text.splitlines()[0]
    delimiter = max(",;\t", key=header.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in ("id", "decision") if c not in columns]
    if missing:
        raise InputError(f"decisions file {path} lacks the column(s) {missing}; keep the header row of the exported {SAMPLE_CSV}")
    reader.fieldnames = columns
    for n, rec in enumerate(reader, start=2):
        if None in rec:
            rows.append(DecisionRow(f"row {n}", _cell(rec.get("id")), "", "", "", "",
                                    "more cells than columns (an unquoted separator in a cell?)"))
            continue
        rows.append(DecisionRow(f"row {n}", _cell(rec.get("id")), _cell(rec.get("decision")).lower(),
                                _cell(rec.get("reason")), _cell(rec.get("edited_answer")), _cell(rec.get("reviewer"))))
    return rows


@dataclass
class ReviewPlan:
    """What an import will do, every row already checked."""

    accepts: dict[str, DecisionRow] = field(default_factory=dict)
    rejects: dict[str, DecisionRow] = field(default_factory=dict)
    edits: dict[str, tuple[DecisionRow, list[dict[str, Any]], str]] = field(default_factory=dict)  # row, messages, check
    not_reviewed: int = 0
    unchanged: int = 0
    forced: int = 0

    @property
    def changes(self) -> int:
        return len(self.accepts) + len(self.rejects) + len(self.edits)


def _same(current: Any, wanted: str) -> bool:
    return (_plain(current) or "") == wanted


def plan_review(frame: pd.DataFrame, rejected_before: set[str], rows: list[DecisionRow], cfg: ReviewConfig,
                validate_cfg: ValidateConfig) -> tuple[ReviewPlan, list[str]]:
    """Check every row; returns the plan and the problems (one entry per bad row)."""
    plan, problems, seen = ReviewPlan(), [], {}
    index = {str(i): pos for pos, i in enumerate(frame["id"])}
    known: RunNames | None = None  # names in the whole dataset: another example's vessel is a wrong name in an edit
    for row in rows:
        label = f"{row.where} (id {row.id})" if row.id else row.where
        if row.problem:
            problems.append(f"{label}: {row.problem}")
            continue
        if not row.id:
            if row.decision or row.reason or row.edited:
                problems.append(f"{label}: no id")
            continue
        if row.id in seen:
            problems.append(f"{label}: the same id is on {seen[row.id]}; give one decision per example")
            continue
        seen[row.id] = row.where
        if not row.decision:
            if row.edited:
                problems.append(f"{label}: edited_answer is filled but decision is blank; write edit (or clear edited_answer)")
            elif row.reason:
                problems.append(f"{label}: reason is filled but decision is blank; write reject, accept or edit")
            else:
                plan.not_reviewed += 1
            continue
        if row.decision not in DECISIONS:
            problems.append(f"{label}: decision {row.decision!r} is not accept, reject, edit or blank")
            continue
        if row.decision == "reject" and not row.reason:
            problems.append(f"{label}: reject needs a reason")
            continue
        if row.decision == "edit" and not row.edited:
            problems.append(f"{label}: edit needs the corrected answer in edited_answer")
            continue
        if row.decision == "accept" and row.edited:
            problems.append(f"{label}: accept with an edited_answer; write edit to apply the edit, or clear edited_answer")
            continue
        if row.id not in index:
            if row.id in rejected_before:
                if row.decision == "reject":
                    plan.unchanged += 1
                else:
                    problems.append(f"{label}: was rejected by an earlier review import (it is in quarantine); "
                                    f"it cannot be {row.decision}ed")
            else:
                problems.append(f"{label}: unknown id, not in this dataset version")
            continue
        current = frame.iloc[index[row.id]]
        if row.decision == "reject":
            plan.rejects[row.id] = row
            continue
        if row.decision == "accept":
            if (_same(current.get("review"), "accepted") and _same(current.get("review_reason"), row.reason)
                    and _same(current.get("reviewer"), row.reviewer)):
                plan.unchanged += 1
            else:
                plan.accepts[row.id] = row
            continue
        example = _record(current)
        turns = row.edited if isinstance(row.edited, list) else split_turns(row.edited)
        n_turns = len(_turns(example["messages"], "assistant"))
        if len(turns) != n_turns or not all(turns):
            problems.append(f"{label}: edited_answer has {len(turns)} turn(s){' (one empty)' if not all(turns) else ''}, "
                            f"the dialogue has {n_turns}; write every turn, separated by a line '{TURN_SEPARATOR}'")
            continue
        replies = iter(turns)
        messages = [{**m, "content": next(replies)} if m["role"] == "assistant" else m for m in example["messages"]]
        if (_same(current.get("review"), "edited") and messages == example["messages"]
                and _same(current.get("review_reason"), row.reason) and _same(current.get("reviewer"), row.reviewer)):
            plan.unchanged += 1  # applied by an earlier import (a forced edit included)
            continue
        if known is None:
            known = run_names(frame[[c for c in ("vessel_name", "grounding", "fact") if c in frame]].to_dict("records"))
        verdict = validate_example({**example, "messages": messages}, validate_cfg, known)
        if not verdict.keep and not cfg.force_edits:
            problems.append(f"{label}: the edited answer fails the check {verdict.reason} ({verdict.detail}); "
                            "correct it, or import with --force-edits (review.force_edits) to keep it marked")
            continue
        check = "passed" if verdict.keep else f"failed, kept by the reviewer: {verdict.reason}: {verdict.detail}"
        plan.forced += not verdict.keep
        plan.edits[row.id] = (row, messages, check)
    return plan, problems


def _review_rejected_ids(quarantine: pd.DataFrame) -> set[str]:
    return set(quarantine.loc[quarantine["stage"] == "review", "record_id"].dropna().astype(str))


def check_newest_version(dataset_dir: Path) -> None:
    """Decisions go into the newest version of the dataset line: a later version already carries
    these examples, and decisions applied to an older one would never reach it."""
    from tasks.versions import latest_version

    dataset_dir = Path(dataset_dir).resolve()
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    lineage = (manifest.get("version") or {}).get("lineage")
    newest = latest_version(dataset_dir.parent.parent, lineage) if lineage else None
    if newest is not None and newest.resolve() != dataset_dir:
        raise InputError(f"{dataset_dir.parent.name} is not the newest version of dataset line {lineage}: "
                         f"{newest.parent.name} carries its examples; import the decisions there (--run-dir {newest.parent})")


def load_review_plan(dataset_dir: Path, decisions_path: Path, cfg: ReviewConfig,
                     validate_cfg: ValidateConfig) -> ReviewPlan:
    """Read the dataset and the decisions and check every row; one InputError lists all bad rows."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "examples.parquet").is_file():
        raise InputError(f"{dataset_dir} holds no published dataset (examples.parquet); run the refresh flow first")
    check_newest_version(dataset_dir)
    rows = read_decisions(decisions_path)
    frame = pd.read_parquet(dataset_dir / "examples.parquet")
    quarantine = pd.read_parquet(dataset_dir / "quarantine.parquet")
    plan, problems = plan_review(frame, _review_rejected_ids(quarantine), rows, cfg, validate_cfg)
    if problems:
        hint = ""
        if all("unknown id" in p for p in problems) and len(problems) == len([r for r in rows if r.id]):
            hint = " (no id matches: is the file from another run? pass that run with --run-dir)"
        raise InputError(f"decisions file {decisions_path}: {len(problems)} bad row(s), nothing was imported{hint}: "
                         + "; ".join(problems))
    return plan


def _rewrite_split(source: Path, target: Path, rejected: set[str], messages: dict[str, list[dict[str, Any]]]) -> None:
    """train/eval JSONL with rejected examples left out and edited ones given their new messages;
    every other line is kept byte for byte."""
    with open(source) as src, open(target, "w") as out:
        for line in src:
            if not line.strip():
                continue
            row = json.loads(line)
            if row["id"] in rejected:
                continue
            if row["id"] in messages:
                line = json.dumps({**row, "messages": messages[row["id"]]}, default=str) + "\n"
            out.write(line)


def import_review(dataset_dir: Path, decisions_path: Path, cfg: ReviewConfig,
                  validate_cfg: ValidateConfig = ValidateConfig()) -> dict[str, Any]:
    """Apply a reviewer's decisions to the dataset version in dataset_dir (see the module doc)."""
    dataset_dir, decisions_path = Path(dataset_dir), Path(decisions_path)
    plan = load_review_plan(dataset_dir, decisions_path, cfg, validate_cfg)
    digest = sha256_file(decisions_path)
    counts = {"accepted": len(plan.accepts), "rejected": len(plan.rejects), "edited": len(plan.edits),
              "forced_edits": plan.forced, "not_reviewed": plan.not_reviewed, "unchanged": plan.unchanged}
    stats = {"file": str(decisions_path), "sha256": digest, **counts, "changed": plan.changes > 0}
    if not plan.changes:
        return stats  # everything in the file is already in the dataset: nothing is rewritten

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    frame = pd.read_parquet(dataset_dir / "examples.parquet")
    for col in REVIEW_FIELDS:
        if col not in frame:
            frame[col] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    pos = {str(i): idx for idx, i in zip(frame.index, frame["id"])}

    def mark(example_id: str, row: DecisionRow, review: str) -> None:
        idx = pos[example_id]
        frame.at[idx, "review"] = review
        frame.at[idx, "review_reason"] = row.reason or None
        frame.at[idx, "reviewer"] = row.reviewer or None
        frame.at[idx, "reviewed_at"] = now

    for example_id, row in plan.accepts.items():
        mark(example_id, row, "accepted")
    for example_id, (row, messages, check) in plan.edits.items():
        idx = pos[example_id]
        if not isinstance(_plain(frame.at[idx, "original_answer"]), str):
            frame.at[idx, "original_answer"] = _joined(_turns(json.loads(frame.at[idx, "messages"]), "assistant"))
        frame.at[idx, "messages"] = json.dumps(messages)
        frame.at[idx, "answer"] = "\n".join(_turns(messages, "assistant"))
        frame.at[idx, "review_check"] = check
        mark(example_id, row, "edited")
    rejected_rows = []
    for example_id, row in plan.rejects.items():
        mark(example_id, row, "rejected")
        record = _record(frame.loc[pos[example_id]])
        rejected_rows.append(quarantine_row("review", "review_rejected", row.reason, record))
    frame = frame[~frame["id"].astype(str).isin(plan.rejects)].reset_index(drop=True)

    staging = dataset_dir.with_name(dataset_dir.name + ".review-partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for item in dataset_dir.iterdir():
        if item.name in REWRITTEN:
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
    edited_messages = {example_id: messages for example_id, (_, messages, _) in plan.edits.items()}
    for split in ("train", "eval"):
        _rewrite_split(dataset_dir / f"{split}.jsonl", staging / f"{split}.jsonl", set(plan.rejects), edited_messages)
    frame.to_parquet(staging / "examples.parquet", index=False)
    quarantine = pd.concat([pd.read_parquet(dataset_dir / "quarantine.parquet").astype("string"),
                            pd.DataFrame(rejected_rows, columns=list(QUARANTINE_COLUMNS)).astype("string")],
                           ignore_index=True)
    quarantine.to_parquet(staging / "quarantine.parquet", index=False)

    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    review = manifest.get("review") or {"imports": []}
    review["imports"] = review["imports"] + [{"file": decisions_path.name, "sha256": digest, "imported_at": now, **counts}]
    review["totals"] = {"accepted": int((frame["review"] == "accepted").sum()),
                        "edited": int((frame["review"] == "edited").sum()),
                        "forced_edits": int(frame["review_check"].map(lambda g: isinstance(g, str) and g != "passed").sum()),
                        "rejected": len(_review_rejected_ids(quarantine))}
    sides = frame[[c for c in ("split_key", "mmsi", "split") if c in frame]].to_dict("records")
    manifest = finish_manifest({**manifest, "review": review}, sides, quarantine, staging)
    replace_dir(staging, dataset_dir)
    return {**stats, "examples": len(frame), "train_examples": manifest["splits"]["train"],
            "eval_examples": manifest["splits"]["eval"]}


export_review_task = task(name="review-export")(export_review_sample)
import_review_task = task(name="review-import")(import_review)

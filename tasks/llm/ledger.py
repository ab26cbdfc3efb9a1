"""Token ledger: one JSON line per try sent to (or replayed for) a teacher.

A line: {ts, item_id, teacher, model, try, purpose, outcome, reason, status, input_tokens,
output_tokens, cost_usd, latency_s, retry_after_s}. `try` counts every try of one item from 1
(asks, retries and re-asks); `purpose` is "ask" or "reask"; `outcome` is "ok", "invalid_output"
(the API answered but the text is not the JSON asked for; `reason` says why), an error kind
("rate_limited", "server_error", "timeout", "connection", "client_error", "bad_response"), or
"cached" (replayed from the response cache: cost 0 here, it was paid in an earlier run).
Lines are appended and flushed one at a time, so a killed run keeps its ledger. No line carries
a key: the runner writes only the fields above.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# costs are kept to 10 decimals (float noise only); tasks.teacher reports run costs the same way, so a
# fanned-out run's batches add up to what one unbatched run reports
COST_DIGITS = 10

LEDGER_OUTCOMES = (
    "ok",
    "invalid_output",
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "client_error",
    "bad_response",
    "cached",
)


def _empty_totals() -> dict[str, Any]:
    return {
        "tries": 0,  # ledger lines: every call sent plus every cached replay
        "calls": 0,  # requests sent to the API
        "cache_hits": 0,
        "retries": 0,  # calls that followed a failed call of the same item (429, 5xx, timeout, ...)
        "reasks": 0,  # calls that re-asked after invalid output (purpose "reask")
        "input_tokens": 0,  # billed in this ledger's calls (cached replays excluded)
        "output_tokens": 0,
        "cost_usd": 0.0,
        "outcomes": Counter(),
    }


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals per teacher and overall: {"overall": {...}, "teachers": {name: {...}}}."""
    overall = _empty_totals()
    teachers: dict[str, dict[str, Any]] = {}
    retried: set[tuple[str, str]] = set()
    for line in lines:
        per = teachers.setdefault(line["teacher"], _empty_totals())
        cached = line["outcome"] == "cached"
        item = (line["teacher"], line["item_id"])
        for totals in (overall, per):
            totals["tries"] += 1
            totals["outcomes"][line["outcome"]] += 1
            if cached:
                totals["cache_hits"] += 1
                continue
            totals["calls"] += 1
            totals["input_tokens"] += int(line["input_tokens"])
            totals["output_tokens"] += int(line["output_tokens"])
            totals["cost_usd"] += float(line["cost_usd"])
            totals["reasks"] += line["purpose"] == "reask"
            totals["retries"] += item in retried
        if line["outcome"] not in ("ok", "invalid_output", "cached"):
            retried.add(item)
        else:
            retried.discard(item)
    for totals in [overall, *teachers.values()]:
        totals["outcomes"] = dict(totals["outcomes"])
        totals["cost_usd"] = round(totals["cost_usd"], COST_DIGITS)
    return {"overall": overall, "teachers": teachers}


def read_ledger(path: Path | str) -> list[dict[str, Any]]:
    """Every line of a ledger file (all runs that appended to it)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:  # blank, or the half-written last line of a killed run
                continue
    return lines


class Ledger:
    """Appends one line per try to a JSONL file; `summary()` totals the lines this object wrote."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
        self._fh = self.path.open("a", encoding="utf-8")
        if torn:  # a killed run's half-written last line: the next line starts on its own
            self._fh.write("\n")
        self.lines: list[dict[str, Any]] = []

    def record(
        self,
        *,
        item_id: str,
        teacher: str,
        model: str,
        try_: int,
        purpose: str,
        outcome: str,
        status: int | None,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        latency_s: float,
        retry_after_s: float | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        if outcome not in LEDGER_OUTCOMES:
            raise ValueError(f"ledger outcome {outcome!r} is not one of {LEDGER_OUTCOMES}")
        line = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "item_id": item_id,
            "teacher": teacher,
            "model": model,
            "try": try_,
            "purpose": purpose,
            "outcome": outcome,
            "reason": reason,
            "status": status,
            "input_tokens": int(input_tokens),
            "output_tokens": int(output_tokens),
            "cost_usd": round(float(cost_usd), COST_DIGITS),
            "latency_s": round(float(latency_s), 4),
            "retry_after_s": retry_after_s,
        }
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.lines.append(line)
        return line

    def summary(self) -> dict[str, Any]:
        return summarize(self.lines)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

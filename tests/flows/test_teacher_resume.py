"""A refresh run with LLM teachers, killed halfway and started again: no finished item is asked
twice and the dataset equals an uninterrupted run's. The same runs are searched for a planted key."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.llm.ledger import read_ledger
from tasks.llm.loopback import LoopbackLLM
from tests.conftest import REPO

OPENAI_KEY = "sk-test-PLANTED-resume-0b7d41e2"
ANTHROPIC_KEY = "sk-ant-test-PLANTED-resume-9c3f"


def faults(n: int, request: dict) -> str | None:
    """Transport faults by arrival order (they change timing, never results) and a malformed first
    answer for a fixed set of prompts (a function of the content, so every run sees the same)."""
    if n % 10 == 3:
        return "429:0.1"
    if n % 17 == 8:
        return "500"
    digest = hashlib.sha1(request["messages"][-1]["content"].encode()).digest()[0]
    if len(request["messages"]) <= 2 and digest % 9 == 0:
        return "malformed"
    return None


def write_config(tmp: Path, srv: LoopbackLLM, runs: Path, cache: Path) -> Path:
    config = {
        "run": {"runs_dir": str(runs)},
        # each config its own dataset line: the resumed run must not build on the reference's version
        "publish": {"lineage": cache.stem},
        "simulate": {"vessels": 10, "hours": 12},
        "generate": {"max_seeds": 60},
        "teacher": {
            "teachers": [
                {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
                 "api_key_env": "TW_RESUME_OPENAI_KEY", "share": 0.45, "concurrency": 2},
                {"name": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": srv.anthropic_base_url,
                 "api_key_env": "TW_RESUME_ANTHROPIC_KEY", "share": 0.45, "concurrency": 2},
                {"name": "template", "kind": "template", "share": 0.1},
            ],
            "corrupt_share": 0.0, "backoff_base_s": 0.01, "cache_path": str(cache),
        },
    }
    path = tmp / f"config-{cache.stem}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, run_id: str, api_url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, "TW_RESUME_OPENAI_KEY": OPENAI_KEY,
           "TW_RESUME_ANTHROPIC_KEY": ANTHROPIC_KEY}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "refresh", "--config", str(config), "--run-id", run_id],
                            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def ledger(run: Path) -> list[dict]:
    return [json.loads(line) for line in open(run / "work" / "teacher_ledger.jsonl")]


def dataset(run: Path) -> pd.DataFrame:
    ex = pd.read_parquet(run / "dataset" / "examples.parquet")
    cols = ["id", "teacher", "category", "form", "question", "answer", "split"]
    return ex[cols].sort_values("id").reset_index(drop=True)


@pytest.fixture(scope="module")
def api_url(prefect_server):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def test_killed_run_resumes_without_repeating_calls_and_matches_an_uninterrupted_run(api_url, tmp_path):
    runs = tmp_path / "runs"
    with LoopbackLLM(latency_s=0.05, faults=faults) as srv:
        # reference: one uninterrupted run with its own cache
        ref_cfg = write_config(tmp_path, srv, runs, tmp_path / "cache-ref.sqlite")
        finish(start(ref_cfg, "ref", api_url, tmp_path / "ref.log"), tmp_path / "ref.log")
        ref_requests = len(srv.requests)
        assert ref_requests > 20

        # the same run, killed (SIGKILL: no clean-up) once about half its calls are made
        cfg = write_config(tmp_path, srv, runs, tmp_path / "cache.sqlite")
        srv.reset()
        proc = start(cfg, "killed", api_url, tmp_path / "killed.log")
        deadline = time.monotonic() + 240
        while len(srv.requests) < ref_requests // 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + (tmp_path / "killed.log").read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # killed before the merge: what it asked is in the ledgers of its generation batches
        first_half = [t for path in sorted((runs / "killed" / "work" / "generate").glob("*.ledger.jsonl"))
                      for t in read_ledger(path)]
        finished = {t["item_id"] for t in first_half if t["outcome"] == "ok"}
        assert finished, "nothing had finished before the kill"

        # started again (a new run folder; the shared cache is what resumes it)
        srv.reset()
        finish(start(cfg, "resumed", api_url, tmp_path / "resumed.log"), tmp_path / "resumed.log")
        resumed = ledger(runs / "resumed")
        resumed_requests = len(srv.requests)

    asked_again = {t["item_id"] for t in resumed if t["outcome"] != "cached"} & finished
    assert not asked_again, f"{len(asked_again)} finished items were asked again"
    assert resumed_requests == sum(1 for t in resumed if t["outcome"] != "cached")
    assert resumed_requests < ref_requests
    pd.testing.assert_frame_equal(dataset(runs / "resumed"), dataset(runs / "ref"))

    # no key anywhere: run folders, caches, logs, reports
    for path in [*runs.rglob("*"), *tmp_path.glob("cache*.sqlite*"), *tmp_path.glob("*.log")]:
        if path.is_file():
            data = path.read_bytes()
            for key in (OPENAI_KEY, ANTHROPIC_KEY):
                assert key.encode() not in data, f"{key} leaked into {path}"

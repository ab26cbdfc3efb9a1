"""Secrets (issue 10 item 6): a planted fake key for each API model of a run (an OpenAI teacher, an
Anthropic teacher, an OpenAI judge) never reaches what the run leaves behind: the CLI's stdout and
stderr, the Prefect API (flow-run parameters, logs, artifacts), the stage cache under
<runs_dir>/stage_cache, the response cache, the dataset, the report. tests/flows/test_teacher_resume.py
searches the run folders of a killed and resumed run for its keys; this adds the judge's key, the
API and the CLI's output, and a run refused for a key pasted into the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.llm.loopback import LoopbackLLM, draft_responder
from tests.conftest import REPO

KEYS = {"TW_SECRET_OPENAI_KEY": "sk-test-PLANTED-openai-7a21c9",
        "TW_SECRET_ANTHROPIC_KEY": "sk-ant-test-PLANTED-anthropic-5be0",
        "TW_SECRET_JUDGE_KEY": "sk-test-PLANTED-judge-e44d10"}


def responder(request: dict) -> str:
    """Teachers get their draft back; the judge (its prompt asks for a score) a top score."""
    if '"score"' in request["messages"][0]["content"]:
        return '{"score": 5, "reason": "states every computed value"}'
    return draft_responder(request)


def config(tmp: Path, srv: LoopbackLLM) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"runs_dir": str(tmp / "runs")},
        "simulate": {"vessels": 6, "hours": 8},
        "generate": {"max_seeds": 24},
        "teacher": {
            "teachers": [
                {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
                 "api_key_env": "TW_SECRET_OPENAI_KEY", "share": 0.5, "concurrency": 2},
                {"name": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": srv.anthropic_base_url,
                 "api_key_env": "TW_SECRET_ANTHROPIC_KEY", "share": 0.5, "concurrency": 2},
            ],
            "corrupt_share": 0.0, "cache_path": str(tmp / "teacher_cache.sqlite"),
        },
        "judge": {"enabled": True, "min_score": 1,
                  "llm": {"kind": "openai", "model": "gpt-4o-mini", "base_url": srv.openai_base_url,
                          "api_key_env": "TW_SECRET_JUDGE_KEY"}},
    }))
    return path


def api_text(flow_run_ids: list) -> str:
    """Everything the Prefect API holds about the flow runs: parameters, state messages, logs,
    artifacts, task runs (names and states)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        parts = []
        for flow_run_id in flow_run_ids:
            run = client.read_flow_run(flow_run_id)
            parts.append(run.model_dump_json())
        runs = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        parts += [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))]
        parts += [a.model_dump_json() for a in client.read_artifacts(flow_run_filter=runs)]
        parts += [t.model_dump_json() for t in client.read_task_runs(flow_run_filter=runs)]
        # events (state changes carry the flow run as a resource; the server stores them a few
        # seconds late): every page, the runs' own events, waiting until each run's final state is in
        ids = [str(i) for i in flow_run_ids]
        deadline = time.monotonic() + 30
        while True:
            events, page = [], client.read_events(limit=50)
            while page is not None:
                events += [e for e in (event.model_dump_json() for event in page.events) if any(i in e for i in ids)]
                page = client.read_events_page(page.next_page) if page.next_page else None
            ended = (".Completed", ".Failed", ".Crashed", ".Cancelled")
            if all(any(i in e and any(f'"prefect.flow-run{end}"' in e for end in ended) for e in events) for i in ids) \
                    or time.monotonic() > deadline:
                break
            time.sleep(1)
        parts += events
    return "\n".join(parts)


def flow_runs_since(before: set) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [r.id for r in client.read_flow_runs(limit=200) if r.id not in before]


def all_flow_run_ids() -> set:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {r.id for r in client.read_flow_runs(limit=200)}


def assert_no_key(text: str | bytes, where: str) -> None:
    for key in KEYS.values():
        needle = key.encode() if isinstance(text, bytes) else key
        assert needle not in text, f"{key} leaked into {where}"


def test_no_planted_key_reaches_output_api_caches_dataset_or_report(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    before = all_flow_run_ids()
    with LoopbackLLM(responder=responder) as srv:
        out = subprocess.run([sys.executable, "-m", "flows.cli", "refresh", "--config", str(config(tmp_path, srv)),
                              "--run-id", "secret"],
                             cwd=REPO, env={**os.environ, **KEYS, "PREFECT_API_URL": PREFECT_API_URL.value()},
                             capture_output=True, text=True, timeout=600)
        requests = srv.requests
    assert out.returncode == 0, out.stderr[-3000:]
    # the keys were used: every request carried one, each API model was asked
    assert requests and all(r["auth_present"] for r in requests)
    assert {r["api"] for r in requests} == {"openai", "anthropic"}
    assert any('"score"' in r["messages"][0]["content"] for r in requests)
    stats = json.loads((tmp_path / "runs" / "secret" / "stats.json").read_text())
    assert stats["judge"]["enabled"] and stats["generate"]["llm"]["calls"] > 0
    assert_no_key(out.stdout + out.stderr, "the CLI's output")
    runs = flow_runs_since(before)
    assert runs
    assert_no_key(api_text(runs), "the Prefect API")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("stage_cache" in p.parts for p in files) and any(p.name == "report.md" for p in files)
    for path in files:
        assert_no_key(path.read_bytes(), str(path))


@pytest.mark.parametrize(("pasted_into", "field"), [("teacher", "teacher.teachers.0.api_key_env"),
                                                     ("judge", "judge.llm.api_key_env"), ("base_url", "judge.llm.base_url")])
def test_a_key_pasted_into_the_config_is_refused_without_echoing_it(prefect_server, tmp_path, pasted_into, field):
    from prefect.settings import PREFECT_API_URL

    key = KEYS["TW_SECRET_OPENAI_KEY"]
    spec = {"name": "gpt", "kind": "openai", "model": "gpt-4o", "api_key_env": key}
    judge = {k: v for k, v in spec.items() if k != "name"}
    overrides = ({"teacher.teachers": [spec]} if pasted_into == "teacher"
                 else {"judge.enabled": True, "judge.llm": judge} if pasted_into == "judge"
                 else {"judge.enabled": True, "judge.llm": {**judge, "api_key_env": "TW_SECRET_JUDGE_KEY", "base_url": key}})
    before = all_flow_run_ids()
    args = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}")]
    out = subprocess.run([sys.executable, "-m", "flows.cli", "refresh", "--set", f"run.runs_dir={tmp_path / 'runs'}", *args],
                         cwd=REPO, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and field in out.stderr, out.stderr[-2000:]
    assert_no_key(out.stdout + out.stderr, "the refused run's error")
    # refused before Prefect started: nothing reached the API
    assert flow_runs_since(before) == []


@pytest.mark.parametrize("flow_name", ["refresh", "end_to_end", "train_evaluate", "review_export"])
def test_a_key_pasted_into_a_flows_overrides_is_redacted_from_the_flow_run(prefect_server, tmp_path, flow_name):
    """A direct or deployment call gives Prefect the parameters before the flow's code runs, so the
    flow run holds them; the flow must fail naming the field and leave the key in no parameter,
    state message or log."""
    from flows.end_to_end import end_to_end
    from flows.refresh import refresh
    from flows.review import review_export
    from flows.train_eval import train_evaluate
    from tasks.errors import ConfigError

    flow = {"refresh": refresh, "end_to_end": end_to_end, "train_evaluate": train_evaluate,
            "review_export": review_export}[flow_name]
    key = KEYS["TW_SECRET_OPENAI_KEY"]
    overrides = {"run": {"runs_dir": str(tmp_path / "runs")},
                 "teacher": {"teachers": [{"name": "gpt", "kind": "openai", "model": "gpt-4o", "api_key_env": key}]},
                 "judge": {"llm": {"name": "judge", "kind": "openai", "model": "gpt-4o-mini", "api_key_env": "OK_NAME",
                                    "base_url": key}}}
    before = all_flow_run_ids()
    with pytest.raises(ConfigError) as err:
        flow(overrides=overrides)
    assert "teacher.teachers.0.api_key_env" in str(err.value) and "judge.llm.base_url" in str(err.value)
    assert_no_key(str(err.value), "the error")
    runs = flow_runs_since(before)
    assert runs, "the flow run was created (its parameters are what must be cleaned)"
    text = api_text(runs)
    assert "[redacted]" in text and "gpt-4o-mini" in text  # the rest of the parameters stay readable
    assert "prefect.flow-run.Failed" in text  # its events were read too
    assert_no_key(text, "the Prefect API")

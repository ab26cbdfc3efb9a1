"""Bad configuration (issue 10 item 5): an unknown key, a wrong type or an impossible value stops a
refresh before any work starts. The CLI answers with exit 2 and one line on stderr naming the
field; the refresh flow itself raises before it creates a run folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tasks.errors import ConfigError
from tests.conftest import REPO

UNSET_KEY_ENV = "TW_ABUSE_KEY_NEVER_SET"
API_TEACHER = {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1",
               "api_key_env": UNSET_KEY_ENV}

# (overrides, what the one line must say): each a mistake a user makes in a config or --set
MISTAKES = [
    pytest.param({"generate.max_seedz": 3}, "generate.max_seedz: unknown key", id="unknown-key"),
    pytest.param({"trian.max_steps": 3}, "trian: unknown key", id="unknown-section"),
    pytest.param({"teacher.teachers": [{"name": "t", "kind": "template", "shar": 1}]}, "teacher.teachers.0.shar: unknown key",
                 id="unknown-teacher-key"),
    pytest.param({"simulate.vessels": "lots"}, "simulate.vessels: Input should be a valid integer", id="wrong-type-int"),
    pytest.param({"run.reuse_stages": "maybe"}, "run.reuse_stages: Input should be a valid boolean", id="wrong-type-bool"),
    pytest.param({"simulate.start": "yesterday"}, "simulate.start:", id="wrong-type-datetime"),
    pytest.param({"generate.category_shares": "movement"}, "generate.category_shares: Input should be a valid dictionary",
                 id="wrong-type-mapping"),
    pytest.param({"generate.unanswerable_share": -0.1}, "generate.unanswerable_share: Input should be greater than or equal to 0",
                 id="negative-share"),
    pytest.param({"teacher.teachers": [{"name": "t", "kind": "template", "share": -1}]},
                 "teacher.teachers.0.share: Input should be greater than or equal to 0", id="negative-teacher-share"),
    pytest.param({"teacher.teachers": [{"name": "a", "kind": "template", "share": 0.5},
                                       {"name": "b", "kind": "template", "share": 0.3}]},
                 "teacher.teachers: shares must sum to 1, got 0.8 (a 0.5, b 0.3)", id="teacher-shares-not-1"),
    pytest.param({"generate.category_shares": {"identity": 0.5}},
                 "generate.category_shares: shares must sum to 1, got 1.35", id="category-mix-not-1"),
    pytest.param({"generate.difficulty_shares": {"easy": 0.5, "medium": 0.5, "hard": 0.5}},
                 "generate.difficulty_shares: shares must sum to 1, got 1.5", id="difficulty-mix-not-1"),
    pytest.param({"generate.category_shares": {"port_actvity": 0}}, "unknown categories ['port_actvity']", id="unknown-category"),
    pytest.param({"split.eval_share": 1.5}, "split.eval_share: Input should be less than 1", id="share-above-1"),
    pytest.param({"simulate.hours": 0}, "simulate.hours: Input should be greater than 0", id="zero-hours"),
    pytest.param({"train.max_steps": 0}, "train.max_steps: Input should be greater than or equal to 1", id="zero-steps"),
    pytest.param({"facts.berth_radius_nm": 5}, "facts.berth_radius_nm (5) must be below facts.port_radius_nm", id="berth-outside-port"),
    pytest.param({"dedup.paraphrase_threshold": 0.99}, "dedup.paraphrase_threshold (0.99) must not be above dedup.threshold",
                 id="thresholds-crossed"),
    pytest.param({"stage.duckdb_memory_limit": "lots"}, "stage.duckdb_memory_limit: String should match pattern", id="memory-limit"),
    pytest.param({"source.kind": "noaa_download"}, "source.kind noaa_download needs source.base_url, source.start, source.end",
                 id="download-without-dates"),
    pytest.param({"source.kind": "teletext"}, "source.kind: Input should be", id="unknown-source-kind"),
    pytest.param({"teacher.teachers": [{**API_TEACHER, "model": "gpt-9"}]}, "no price for model 'gpt-9'", id="unpriced-model"),
    pytest.param({"teacher.teachers": [{"name": "local", "kind": "openai_compatible", "model": "gpt-4o"}]},
                 "(openai_compatible) needs base_url", id="compatible-without-url"),
    pytest.param({"teacher.teachers": []}, "teacher.teachers is empty", id="no-teacher"),
    pytest.param({"evaluate.teacher": "nope"}, "evaluate.teacher 'nope' is not one of teacher.teachers", id="unknown-eval-teacher"),
    pytest.param({"judge.enabled": True}, "judge.enabled needs judge.llm", id="judge-without-model"),
    pytest.param({"teacher.teachers": [API_TEACHER]}, f"needs an API key in environment variable {UNSET_KEY_ENV}",
                 id="teacher-key-not-set"),
    pytest.param({"judge.enabled": True, "judge.llm": {"name": "judge", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                        "api_key_env": UNSET_KEY_ENV}},
                 f"needs an API key in environment variable {UNSET_KEY_ENV}", id="judge-key-not-set"),
]
def set_args(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items()
            for arg in ("--set", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")]


@pytest.mark.parametrize("overrides, says", MISTAKES)
def test_the_cli_refuses_a_bad_config_in_one_line_naming_the_field(overrides, says, tmp_path, capsys, monkeypatch):
    # in process (flows.cli.main, what `python -m flows.cli` runs); the test below runs real processes
    from flows.cli import main

    monkeypatch.delenv(UNSET_KEY_ENV, raising=False)
    code = main(["refresh", "--run-id", "refused", "--set", f"run.runs_dir={tmp_path / 'runs'}", *set_args(overrides)])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert says in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, says", [m for m in MISTAKES if m.id in ("unknown-teacher-key", "teacher-shares-not-1",
                                                                           "teacher-key-not-set")])
def test_the_cli_process_exits_2_with_one_line(overrides, says, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != UNSET_KEY_ENV}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "refresh", "--run-id", "refused",
                          "--set", f"run.runs_dir={tmp_path / 'runs'}", *set_args(overrides)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert says in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, says", MISTAKES)
def test_the_refresh_flow_raises_before_it_creates_a_run_folder(overrides, says, tmp_path, prefect_server, monkeypatch):
    from flows.refresh import refresh

    monkeypatch.delenv(UNSET_KEY_ENV, raising=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"run": {"runs_dir": str(tmp_path / "runs")}}))
    with pytest.raises(Exception) as raised:
        refresh(config=str(config), overrides=overrides, run_id="refused")
    # the flow checks the overrides itself (flows/params.py): each field's type and bounds, then the
    # merged config (unknown keys in nested lists, cross-field rules)
    message = str(raised.value)
    assert isinstance(raised.value, ConfigError), repr(raised.value)
    assert says.split(":")[0].split(" (")[0] in message, message
    assert not (tmp_path / "runs" / "refused").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

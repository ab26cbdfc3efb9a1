"""The teacher stage end to end: seeds from a real small pipeline, four teachers mixed in one run
(template, OpenAI, Anthropic, OpenAI-compatible) through the real SDKs and distilabel against a
loopback server, with faults, a budget, and a run where nothing succeeds."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import GenerateConfig, TeacherConfig, ValidateConfig
from tasks.errors import TeacherError
from tasks.llm.loopback import LoopbackLLM
from tasks.seeds import build_seeds, read_seeds
from tasks.teacher import generate_examples
from tasks.validate import validate_example
from tests.tasks.factories import small_pipeline

OPENAI_KEY = "sk-test-PLANTED-openai-7f3a9c"
ANTHROPIC_KEY = "sk-ant-test-PLANTED-anthropic-51d2e8"


@pytest.fixture(scope="module")
def seeds_path(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gen")
    staged, facts = small_pipeline(tmp, seed=5, vessels=20, hours=12)
    build_seeds(staged.positions_path, facts.paths, facts.params, facts.digests, None,
                GenerateConfig(max_seeds=80), tmp / "seeds.jsonl")
    return tmp / "seeds.jsonl"


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("TW_TEST_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("TW_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY)


def mixed(srv: LoopbackLLM, **run) -> TeacherConfig:
    return TeacherConfig.model_validate({
        "teachers": [
            {"name": "template", "kind": "template", "share": 0.25},
            {"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
             "api_key_env": "TW_TEST_OPENAI_KEY", "share": 0.25, "concurrency": 4},
            {"name": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": srv.anthropic_base_url,
             "api_key_env": "TW_TEST_ANTHROPIC_KEY", "share": 0.25, "concurrency": 4},
            {"name": "local", "kind": "openai_compatible", "model": "local-model", "base_url": srv.openai_base_url,
             "share": 0.25, "concurrency": 4},
        ],
        "prices": {"local-model": {"input_per_mtok": 0, "output_per_mtok": 0}},
        "corrupt_share": 0.0, "backoff_base_s": 0.01, "timeout_s": 5, **run,
    })


def _ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_four_teachers_in_one_run_with_faults_every_try_counted(seeds_path, tmp_path, keys):
    n_seeds = len(read_seeds(seeds_path))
    # transport faults by request count; one malformed first answer per eleven prompts (re-asked)
    def faults(n, request):
        if n % 9 == 4:
            return "429:0.2"
        if n % 13 == 6:
            return "500"
        digest = hashlib.sha1(request["messages"][-1]["content"].encode()).digest()[0]
        if len(request["messages"]) <= 2 and digest % 5 == 0:
            return "malformed"
        return None

    with LoopbackLLM(faults=faults) as srv:
        cfg = mixed(srv)
        stats = generate_examples(seeds_path, cfg, 11, tmp_path / "generated.jsonl", tmp_path / "cache.sqlite",
                                  tmp_path / "ledger.jsonl", tmp_path / "q.parquet")
        requests = len(srv.requests)
        served = Counter(r["api"] for r in srv.requests)
    examples = [json.loads(line) for line in open(tmp_path / "generated.jsonl")]
    by_teacher = Counter(e["teacher"] for e in examples)
    assert set(by_teacher) == {"template", "gpt", "claude", "local"}
    for name, n in by_teacher.items():  # shares of 0.25 each, +- sampling noise
        assert 0.1 * n_seeds <= n <= 0.45 * n_seeds, by_teacher
    assert served["anthropic"] > 0 and served["openai"] > 0
    # every try is in the ledger, and the ledger's tokens and cost add up to the report's
    ledger = _ledger(tmp_path / "ledger.jsonl")
    network = [t for t in ledger if t["outcome"] != "cached"]
    assert len(network) == requests
    assert {"rate_limited", "server_error", "invalid_output"} <= {t["outcome"] for t in ledger}
    reasks = [t for t in network if t["purpose"] == "reask"]
    answered = [t for t in reasks if t["outcome"] in ("ok", "invalid_output")]
    assert answered and all(t["input_tokens"] > 0 for t in answered)  # the re-ask's tokens are counted too
    llm = stats["llm"]
    assert llm["calls"] == requests and llm["input_tokens"] == sum(t["input_tokens"] for t in network)
    assert llm["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in network), abs=1e-6)
    assert llm["cost_usd"] > 0 and llm["cost_per_accepted_usd"] > 0
    assert set(llm["per_category"]) <= {"identity", "movement", "port_activity", "traffic", "anomalies", "safety"}
    # LLM examples carry model, tokens and cost; the drafts they rewrote are grounded, so they pass
    for e in examples:
        if e["teacher"] != "template":
            assert e["teacher_model"] in ("gpt-4o", "claude-sonnet-4-5", "local-model")
            assert json.loads(e["tokens"])["input"] > 0
        verdict = validate_example(e, ValidateConfig())
        assert verdict.keep, (verdict, e["messages"][-1]["content"])
    # nothing lost: every seed is an example or in quarantine with its reason
    quarantine = pd.read_parquet(tmp_path / "q.parquet")
    assert len(examples) + len(quarantine) == n_seeds
    assert stats["generated"] + stats["rejected"] == n_seeds


def test_repeated_run_makes_zero_calls_and_yields_the_same_examples(seeds_path, tmp_path, keys):
    with LoopbackLLM() as srv:
        cfg = mixed(srv)
        first = generate_examples(seeds_path, cfg, 11, tmp_path / "a.jsonl", tmp_path / "cache.sqlite", tmp_path / "la.jsonl")
        calls = len(srv.requests)
        second = generate_examples(seeds_path, cfg, 11, tmp_path / "b.jsonl", tmp_path / "cache.sqlite", tmp_path / "lb.jsonl")
        assert len(srv.requests) == calls > 0  # the second run asked nothing
    assert second["llm"]["calls"] == 0 and second["llm"]["cache_hits"] == first["llm"]["calls"]
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_budget_stops_cleanly_keeping_what_was_done(seeds_path, tmp_path, keys):
    with LoopbackLLM(latency_s=0.01) as srv:
        cfg = mixed(srv, budget_usd=0.03)
        stats = generate_examples(seeds_path, cfg, 11, tmp_path / "g.jsonl", tmp_path / "cache.sqlite",
                                  tmp_path / "l.jsonl", tmp_path / "q.parquet")
    llm = stats["llm"]
    assert llm["stopped"] == "budget"
    assert 0 < llm["accepted"] < llm["items"]
    costs = [json.loads(line)["cost_usd"] for line in open(tmp_path / "l.jsonl")]
    assert 0.03 <= llm["cost_usd"] < 0.03 + max(costs) + 1e-9  # only the last call passes the line
    quarantine = pd.read_parquet(tmp_path / "q.parquet")
    assert (quarantine["reason"] == "not_run:budget").sum() > 0
    examples = [json.loads(line) for line in open(tmp_path / "g.jsonl")]
    assert len(examples) + len(quarantine) == stats["seeds"]
    assert any(e["teacher"] != "template" for e in examples)


def test_a_teacher_that_never_answers_is_an_error_not_an_empty_dataset(seeds_path, tmp_path, keys):
    with LoopbackLLM(faults=lambda n, r: "garbage_body") as srv:
        cfg = TeacherConfig.model_validate({
            "teachers": [{"name": "local", "kind": "openai_compatible", "model": "local-model",
                          "base_url": srv.openai_base_url}],
            "prices": {"local-model": {"input_per_mtok": 0, "output_per_mtok": 0}},
            "backoff_base_s": 0.01, "max_retries": 1, "max_consecutive_failures": 5,
        })
        with pytest.raises(TeacherError, match="no LLM teacher output was accepted"):
            generate_examples(seeds_path, cfg, 11, tmp_path / "g.jsonl", tmp_path / "cache.sqlite",
                              tmp_path / "l.jsonl", tmp_path / "q.parquet")
    assert pd.read_parquet(tmp_path / "q.parquet")["reason"].str.startswith(("failed", "not_run")).all()


def test_missing_key_is_a_config_error_naming_the_variable(seeds_path, tmp_path, monkeypatch):
    from tasks.errors import ConfigError

    monkeypatch.delenv("TW_TEST_ABSENT_KEY", raising=False)
    cfg = TeacherConfig.model_validate({"teachers": [{"name": "gpt", "kind": "openai", "model": "gpt-4o",
                                                      "base_url": "http://127.0.0.1:9/v1", "api_key_env": "TW_TEST_ABSENT_KEY"}]})
    with pytest.raises(ConfigError, match="TW_TEST_ABSENT_KEY"):
        generate_examples(seeds_path, cfg, 11, tmp_path / "g.jsonl", tmp_path / "cache.sqlite")


def test_a_key_pasted_into_the_config_is_refused_without_echoing_it():
    from tasks.config import load_config
    from tasks.errors import ConfigError

    secret = "sk-proj-PASTEDKEY0123456789"
    with pytest.raises(ConfigError) as err:
        load_config(None, {"teacher": {"teachers": [{"name": "g", "kind": "openai", "model": "gpt-4o",
                                                     "api_key_env": secret}]}})
    assert "NAME of an environment variable" in str(err.value) and secret not in str(err.value)


def test_when_only_the_llm_teachers_fail_the_template_share_is_kept(seeds_path, tmp_path, keys):
    with LoopbackLLM(faults=lambda n, r: "garbage_body") as srv:
        cfg = TeacherConfig.model_validate({
            "teachers": [{"name": "template", "kind": "template", "share": 0.5},
                         {"name": "local", "kind": "openai_compatible", "model": "local-model",
                          "base_url": srv.openai_base_url, "share": 0.5}],
            "prices": {"local-model": {"input_per_mtok": 0, "output_per_mtok": 0}},
            "backoff_base_s": 0.01, "max_retries": 1, "max_consecutive_failures": 5,
        })
        stats = generate_examples(seeds_path, cfg, 11, tmp_path / "g.jsonl", tmp_path / "cache.sqlite",
                                  tmp_path / "l.jsonl", tmp_path / "q.parquet")
    assert stats["llm"]["accepted"] == 0 and stats["per_teacher"] == {"template": stats["generated"]} and stats["generated"] > 0
    assert stats["generated"] + stats["rejected"] == stats["seeds"]

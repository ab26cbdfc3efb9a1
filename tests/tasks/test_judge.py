"""The LLM judge through the real OpenAI and Anthropic SDKs (distilabel clients) against the
loopback server, whose judge_responder scores 5 when an answer states every required computed
value and 1 otherwise: faults are retried, unreadable replies re-asked, scores cached, the key
kept out of every file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tasks.artifacts import read_jsonl, write_jsonl
from tasks.config import JudgeConfig, TeacherConfig, load_config
from tasks.errors import ConfigError, TeacherError
from tasks.judge import judge_examples, parse_judgement
from tasks.llm.ledger import read_ledger
from tasks.llm.loopback import LoopbackLLM, judge_responder
from tasks.llm.output import OutputInvalid
from tests.tasks.factories import example, movement_seed, port_seed, unanswerable_seed

KEY_ENV = "TW_TEST_JUDGE_KEY"
PLANTED = "sk-test-PLANTED-judge-4b8e1d"


def dialogue_seed():
    follow = movement_seed("max_speed", mmsi=366000004, maxv=15.5)
    followup = {k: getattr(follow, k) for k in ("form", "category", "difficulty", "fact", "grounding", "fact_sql",
                                                 "fact_sql_digest", "fact_params", "source_hash", "seed_id")}
    return replace(movement_seed("mean_speed", mmsi=366000004, mean=11.06), seed_id="dialogue-366000004",
                   followups=[followup])


def judge_inputs(path: Path) -> tuple[Path, set[str], dict[str, str]]:
    """Grounded examples (one a two-turn dialogue, one an unanswerable refusal) and three whose
    answer is wrong: (path, good ids, bad id -> the value the judge must find missing)."""
    good = [example(movement_seed()), example(movement_seed("max_speed", mmsi=366000002, maxv=14.2)),
            example(movement_seed("distance_run", mmsi=366000003, dist=7.75)), example(port_seed("arrival")),
            example(port_seed("dwell", mmsi=366000010)), example(dialogue_seed()), example(unanswerable_seed())]
    wrong_mean = example(movement_seed(mmsi=366000005, hour=9),
                         answer="Vessel 366000005 averaged 15.8 knots between 09:00 and 10:00 UTC.")
    wrong_time = example(port_seed("departure", mmsi=366000011),
                         answer="Vessel 366000011 (OCEAN 7) left Long Beach (USLGB) at 10:31 UTC.")
    guessed = example(unanswerable_seed(367123888), answer="Vessel 367123888 averaged 11.0 knots in that hour.")
    write_jsonl(good + [wrong_mean, wrong_time, guessed], path)
    bad = {wrong_mean["id"]: "mean_sog_kn = 12.3", wrong_time["id"]: "departure = 10:03",
           guessed["id"]: "guesses instead of saying the data is insufficient"}
    return path, {e["id"] for e in good}, bad


def judge_cfg(srv: LoopbackLLM, kind: str = "openai", llm: dict | None = None, **kw) -> JudgeConfig:
    model = "claude-3-5-haiku-latest" if kind == "anthropic" else "gpt-4o-mini"
    base = srv.anthropic_base_url if kind == "anthropic" else srv.openai_base_url
    spec = {"kind": kind, "model": model, "base_url": base, "api_key_env": KEY_ENV, "concurrency": 3, **(llm or {})}
    return JudgeConfig.model_validate({"enabled": True, "llm": spec, **kw})


def runtime(**kw) -> TeacherConfig:
    return TeacherConfig(backoff_base_s=0.01, timeout_s=5.0, **kw)


def run_judge(tmp_path: Path, in_path: Path, cfg: JudgeConfig, teacher: TeacherConfig, name: str = "a") -> dict:
    return judge_examples(in_path, cfg, teacher, tmp_path / f"{name}_kept.jsonl", tmp_path / f"{name}_q.parquet",
                          tmp_path / "cache.sqlite", tmp_path / f"{name}_ledger.jsonl")


def quarantine(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, PLANTED)


@pytest.fixture
def inputs(tmp_path):
    return judge_inputs(tmp_path / "validated.jsonl")


def test_openai_judge_scores_through_faults_and_reasks(tmp_path, inputs):
    in_path, good, bad = inputs
    with LoopbackLLM(responder=judge_responder, faults=["429:0.05", "500", "malformed"]) as srv:
        stats = run_judge(tmp_path, in_path, judge_cfg(srv), runtime())
        requests = list(srv.requests)

    kept = read_jsonl(tmp_path / "a_kept.jsonl")
    assert {e["id"] for e in kept} == good
    assert all(e["judge_score"] == 5 and e["judge_model"] == "gpt-4o-mini" and e["judge_reason"] for e in kept)
    q = quarantine(tmp_path / "a_q.parquet")
    assert set(q["record_id"]) == set(bad) and set(q["reason"]) == {"judge_low_score"} and set(q["stage"]) == {"judge"}
    for _, row in q.iterrows():  # the judge's reason is the detail, and names what is wrong
        payload = json.loads(row["payload"])
        assert bad[row["record_id"]] in payload["rejection_detail"] and payload["judge_score"] == 1
    # the 429 and the 500 were retried, the malformed reply re-asked with what the judge must send
    ledger = read_ledger(tmp_path / "a_ledger.jsonl")
    assert {"rate_limited", "server_error", "invalid_output"} <= {line["outcome"] for line in ledger}
    reask = [r for r in requests if r["messages"][-1]["content"].startswith("Your reply could not be used (not_json")]
    assert len(reask) == 1 and '"score"' in reask[0]["messages"][-1]["content"]
    assert [line["outcome"] for line in ledger if line["purpose"] == "reask"] == ["ok"]
    # one request per ledger line; deterministic, short judge calls in JSON mode
    assert stats["calls"] == len(requests) == len(ledger) == len(good) + len(bad) + 3
    assert {(r["params"]["temperature"], r["params"]["max_tokens"]) for r in requests} == {(0.0, 256)}
    assert requests[0]["params"]["response_format"] == {"type": "json_object"} and requests[0]["auth_present"]
    assert (stats["input"], stats["kept"], stats["dropped"]) == (10, 7, 3)
    assert stats["reasons"] == {"judge_low_score": 3} and stats["scores"] == {"1": 3, "5": 7}
    assert stats["input_tokens"] == sum(line["input_tokens"] for line in ledger) > 0 and stats["cost_usd"] > 0
    # the judge saw questions, computed values and answers, not the AIS records
    prompt = requests[-1]["messages"][-1]["content"]
    assert "<answer turn=" in prompt and "Computed values" in prompt and "time|lat|lon" not in prompt


def test_dialogue_is_judged_turn_by_turn(tmp_path, inputs):
    in_path, _, _ = inputs
    dialogue = next(e for e in read_jsonl(in_path) if e["turns"] == 2)
    wrong = json.loads(json.dumps(dialogue))
    wrong["id"], wrong["messages"][-1]["content"] = "dialogue-wrong", "Its top speed was 16.9 knots."
    write_jsonl([dialogue, wrong], tmp_path / "d.jsonl")
    with LoopbackLLM(responder=judge_responder) as srv:
        stats = run_judge(tmp_path, tmp_path / "d.jsonl", judge_cfg(srv), runtime())
        prompt = srv.requests[0]["messages"][-1]["content"]
    assert '<answer turn="2">' in prompt and "max_sog_kn = 15.5" in prompt
    assert [e["id"] for e in read_jsonl(tmp_path / "a_kept.jsonl")] == [dialogue["id"]]
    assert "max_sog_kn = 15.5" in json.loads(quarantine(tmp_path / "a_q.parquet")["payload"][0])["rejection_detail"]
    assert stats["reasons"] == {"judge_low_score": 1}


def test_anthropic_judge_then_a_second_run_answers_from_the_cache(tmp_path, inputs):
    in_path, good, bad = inputs
    with LoopbackLLM(responder=judge_responder, faults=["bad_shape", "503"]) as srv:
        cfg = judge_cfg(srv, kind="anthropic")
        first = run_judge(tmp_path, in_path, cfg, runtime())
        calls = len(srv.requests)
        assert {r["api"] for r in srv.requests} == {"anthropic"}
        assert srv.requests[0]["messages"][0]["role"] == "system"  # sent as Anthropic's system prompt
        second = run_judge(tmp_path, in_path, cfg, runtime(), name="b")
        assert len(srv.requests) == calls  # no new HTTP call
    assert {e["id"] for e in read_jsonl(tmp_path / "a_kept.jsonl")} == good
    assert read_jsonl(tmp_path / "b_kept.jsonl") == read_jsonl(tmp_path / "a_kept.jsonl")
    assert set(quarantine(tmp_path / "b_q.parquet")["record_id"]) == set(bad)
    assert {line["outcome"] for line in read_ledger(tmp_path / "a_ledger.jsonl")} >= {"invalid_output", "server_error"}
    # every answer the first run received (the bad-shape one and its re-ask included) is replayed
    assert first["calls"] == calls and second["calls"] == 0 and second["cost_usd"] == 0
    assert second["cache_hits"] == calls - 1  # all but the 503
    assert {line["outcome"] for line in read_ledger(tmp_path / "b_ledger.jsonl")} == {"cached"}
    # the key went out on every request and is in no file, no stats
    needle = PLANTED.encode()
    for f in tmp_path.iterdir():
        assert needle not in f.read_bytes(), f.name
    assert PLANTED not in json.dumps(first) + json.dumps(second)


def test_unscored_examples_are_quarantined_by_default_or_kept_unjudged(tmp_path, inputs):
    in_path, good, _ = inputs
    target = example(movement_seed("distance_run", mmsi=366000003, dist=7.75))["id"]

    def always_down_for_one(n, request):  # the judge fails every try for one example
        return "500" if "366000003" in request["messages"][-1]["content"] else None

    with LoopbackLLM(responder=judge_responder, faults=always_down_for_one) as srv:
        stats = run_judge(tmp_path, in_path, judge_cfg(srv), runtime(max_retries=1))
        kept_stats = run_judge(tmp_path, in_path, judge_cfg(srv, on_unscored="keep"), runtime(max_retries=1), name="k")
    q = quarantine(tmp_path / "a_q.parquet").set_index("record_id")
    assert q.loc[target, "reason"] == "judge_unavailable"
    assert json.loads(q.loc[target, "payload"])["rejection_detail"].startswith("failed:server_error")
    assert target not in {e["id"] for e in read_jsonl(tmp_path / "a_kept.jsonl")}
    assert stats["unscored"] == {"failed:server_error": 1} and stats["reasons"]["judge_unavailable"] == 1

    kept = {e["id"]: e for e in read_jsonl(tmp_path / "k_kept.jsonl")}
    assert set(kept) == good and kept[target]["judge_score"] is None
    assert kept[target]["judge_reason"] == "unscored (failed:server_error)"
    assert "judge_unavailable" not in kept_stats["reasons"]


def test_a_judge_that_scores_nothing_fails_loudly(tmp_path, inputs):
    in_path, _, _ = inputs
    with LoopbackLLM(responder=judge_responder, faults=lambda n, request: "500") as srv:
        with pytest.raises(TeacherError, match="judge scored none of 10 examples"):
            run_judge(tmp_path, in_path, judge_cfg(srv), runtime(max_retries=0))
    q = quarantine(tmp_path / "a_q.parquet")  # nothing lost: every example is in quarantine with why
    assert len(q) == 10 and set(q["reason"]) == {"judge_unavailable"}


def test_judge_budget_stops_and_leaves_the_rest_unscored(tmp_path, inputs):
    in_path, _, _ = inputs
    prices = {"gpt-4o-mini": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}}  # ~0.4 USD a call
    with LoopbackLLM(responder=judge_responder) as srv:
        stats = run_judge(tmp_path, in_path, judge_cfg(srv, llm={"concurrency": 1}, budget_usd=0.9), runtime(prices=prices))
    costs = [line["cost_usd"] for line in read_ledger(tmp_path / "a_ledger.jsonl")]
    # calls start while the spend is under the budget: only the last one takes it past
    assert sum(costs[:-1]) < 0.9 <= sum(costs) == pytest.approx(stats["cost_usd"])
    assert stats["stopped"] == "budget" and stats["scores"] == {"5": len(costs)}
    assert stats["unscored"] == {"not_run:budget": 10 - len(costs)} == {"not_run:budget": stats["reasons"]["judge_unavailable"]}


def test_judge_config_errors_say_how_to_fix_them(tmp_path, inputs):
    with pytest.raises(ConfigError, match=r"judge.enabled needs judge.llm, e.g. \{kind: openai"):
        load_config(None, {"judge.enabled": True})
    with pytest.raises(ConfigError, match="template cannot score answers"):
        load_config(None, {"judge.enabled": True, "judge.llm": {"kind": "template"}})
    with pytest.raises(ConfigError, match="judge.llm.*needs model"):
        load_config(None, {"judge.enabled": True, "judge.llm": {"kind": "anthropic"}})
    with pytest.raises(ConfigError, match="judge.min_score"):
        load_config(None, {"judge.min_score": 6})
    with pytest.raises(ConfigError, match="NAME of an environment variable") as err:  # a key pasted as the name
        load_config(None, {"judge.enabled": True, "judge.llm": {"kind": "openai", "model": "gpt-4o", "api_key_env": PLANTED}})
    assert PLANTED not in str(err.value)
    # a model without a price, and a key variable that is not set: ConfigError before any call
    in_path, _, _ = inputs
    with LoopbackLLM(responder=judge_responder) as srv:
        with pytest.raises(ConfigError, match="add teacher.prices.my-judge"):
            run_judge(tmp_path, in_path, judge_cfg(srv, llm={"model": "my-judge"}), runtime())
        with pytest.raises(ConfigError, match="TW_UNSET"):
            run_judge(tmp_path, in_path, judge_cfg(srv, llm={"api_key_env": "TW_UNSET"}), runtime())
        assert srv.requests == []


def test_disabled_judge_passes_everything_through(tmp_path, inputs):
    in_path, good, bad = inputs
    stats = run_judge(tmp_path, in_path, JudgeConfig(), runtime())
    assert read_jsonl(tmp_path / "a_kept.jsonl") == read_jsonl(in_path)
    assert stats == {"enabled": False, "input": 10, "kept": 10, "dropped": 0, "reasons": {}}
    assert quarantine(tmp_path / "a_q.parquet").empty


@pytest.mark.parametrize(("text", "score"), [
    ('{"score": 4, "reason": "fine"}', 4),
    ('```json\n{"score": "5", "reason": "all values stated"}\n```', 5),
    ('Here is my grade: {"score": 2, "reason": "dwell missing"} Thanks.', 2),
])
def test_parse_judgement_reads_the_score(text, score):
    assert parse_judgement(text).score == score


@pytest.mark.parametrize(("text", "reason", "where"), [
    ("", "empty_text", ""),
    ("I would give it a four.", "not_json", ""),
    ("[4]", "bad_shape", "got list"),
    ('{"score": 6, "reason": "great"}', "bad_shape", "score"),
    ('{"score": 4.5, "reason": "good"}', "bad_shape", "score"),
    ('{"score": 4}', "bad_shape", "reason"),
    ('{"score": 4, "reason": "  "}', "bad_shape", "reason"),
])
def test_parse_judgement_says_why_a_reply_is_unusable(text, reason, where):
    with pytest.raises(OutputInvalid) as err:
        parse_judgement(text)
    assert err.value.reason == reason and where in err.value.detail

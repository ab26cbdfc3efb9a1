"""The teacher runtime end to end: real OpenAI / Anthropic SDKs and distilabel LLM classes against
the loopback server (tasks/llm/loopback.py), real SQLite cache and JSONL ledger files.

Every fault the loopback injects (429 + Retry-After, 5xx, a hang past the timeout, non-JSON
content, wrong-shape JSON, a body that is not JSON) must end in a retry, a re-ask or a recorded
failure, with one ledger line per try; no key may reach a file, a result or a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from pathlib import Path

import httpx2
import openai
import pytest

from tasks.config import TeacherConfig, TeacherSpec
from tasks.errors import ConfigError
from tasks.llm.cache import ResponseCache, cache_key
from tasks.llm.clients import classify, redact, retry_after_seconds
from tasks.llm.ledger import read_ledger
from tasks.llm.loopback import DRAFT_RE, NO_DRAFT_ANSWER, LoopbackLLM
from tasks.llm.runner import WorkItem, run_items

PLANTED = "sk-test-PLANTED-123"
KEY_ENV = "TW_TEST_TEACHER_KEY"
# loopback models with a price, so cost and budget are exercised (USD per million tokens)
PRICES = {"loop-gpt": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0},
          "loop-claude": {"input_per_mtok": 500.0, "output_per_mtok": 1500.0}}


def any_draft_responder(request: dict) -> str:
    """Like the default responder, but finds the <draft> in any user message, so a re-ask (whose
    last user message is the correction) is answered with the original draft."""
    for message in request["messages"]:
        if message["role"] == "user" and (match := DRAFT_RE.search(message["content"])):
            return match.group(1)
    return NO_DRAFT_ANSWER


def draft(i: int, turns: int = 1) -> dict:
    return {"turns": [{"question": f"What was the mean speed of vessel {i:04d} (turn {t})?",
                       "reasoning": "From the positions given.", "answer": f"{10 + i % 7}.{t} knots"}
                      for t in range(turns)]}


def make_items(n: int, teacher: str, turns: int = 1, start: int = 0) -> list[WorkItem]:
    return [
        WorkItem(
            item_id=f"{teacher}-{i:04d}",
            teacher=teacher,
            messages=[
                {"role": "system", "content": "You write maritime QA as JSON."},
                {"role": "user", "content": f"Rewrite this draft. <draft>{json.dumps(draft(i, turns))}</draft>"},
            ],
            expected_turns=turns,
            category="movement",
        )
        for i in range(start, start + n)
    ]


def spec(srv: LoopbackLLM, name: str = "gpt", kind: str = "openai_compatible", **kw) -> TeacherSpec:
    base = srv.anthropic_base_url if kind == "anthropic" else srv.openai_base_url
    model = "loop-claude" if kind == "anthropic" else "loop-gpt"
    return TeacherSpec(name=name, kind=kind, model=kw.pop("model", model), base_url=base,
                       api_key_env=kw.pop("api_key_env", KEY_ENV), **kw)


def config(*teachers: TeacherSpec, **kw) -> TeacherConfig:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    # one mix of shares summing to 1, as the config requires
    return TeacherConfig(teachers=[t.model_copy(update={"share": 1 / len(teachers)}) for t in teachers], prices=PRICES, **kw)


@pytest.fixture(autouse=True)
def teacher_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, PLANTED)


@pytest.fixture
def srv():
    with LoopbackLLM(responder=any_draft_responder) as server:
        yield server


def run(tmp_path: Path, items, cfg, name: str = "run"):
    return run_items(items, cfg, cache_path=tmp_path / "cache.sqlite", ledger_path=tmp_path / f"{name}.jsonl")


def outcomes(path: Path) -> list[str]:
    return [line["outcome"] for line in read_ledger(path)]


# --- end to end ------------------------------------------------------------------------------


def test_openai_teacher_end_to_end(tmp_path, srv):
    items = make_items(6, "gpt")
    summary = run(tmp_path, items, config(spec(srv, kind="openai", concurrency=3)))

    assert [r.status for r in summary.results] == ["accepted"] * 6
    assert [r.item_id for r in summary.results] == [i.item_id for i in items]  # input order
    for i, r in enumerate(summary.results):
        assert r.output.model_dump() == draft(i)
        assert (r.teacher, r.model, r.tries, r.cached) == ("gpt", "loop-gpt", 1, False)
    assert len(srv.requests) == 6 == summary.calls
    first = srv.requests[0]
    assert first["api"] == "openai" and first["model"] == "loop-gpt" and first["auth_present"]
    assert first["params"]["response_format"] == {"type": "json_object"}
    assert first["params"]["max_tokens"] == 1024 and first["params"]["temperature"] == 0.7
    lines = read_ledger(tmp_path / "run.jsonl")
    assert [(l["outcome"], l["purpose"], l["try"]) for l in lines] == [("ok", "ask", 1)] * 6
    # tokens are the server's usage numbers; cost is tokens x the configured price
    assert summary.input_tokens == sum(l["input_tokens"] for l in lines) == sum(r.input_tokens for r in summary.results) > 0
    expected_cost = (summary.input_tokens * 1000.0 + summary.output_tokens * 2000.0) / 1e6
    assert summary.cost_usd == pytest.approx(expected_cost)
    assert sum(r.cost_usd for r in summary.results) == pytest.approx(expected_cost)
    assert summary.stopped is None and summary.per_teacher["gpt"]["statuses"] == {"accepted": 6}


def test_anthropic_teacher_end_to_end(tmp_path, srv):
    items = make_items(4, "claude", turns=2)
    summary = run(tmp_path, items, config(spec(srv, name="claude", kind="anthropic")))

    assert [r.status for r in summary.results] == ["accepted"] * 4
    assert [r.output.model_dump() for r in summary.results] == [draft(i, 2) for i in range(4)]
    req = srv.requests[0]
    assert req["api"] == "anthropic" and req["model"] == "loop-claude" and req["auth_present"]
    # the system prompt went as Anthropic's `system`, not as a message
    assert req["messages"][0] == {"role": "system", "content": "You write maritime QA as JSON."}
    assert req["params"]["max_tokens"] == 1024
    assert summary.output_tokens > 0 and summary.per_teacher["claude"]["model"] == "loop-claude"


def test_two_teachers_in_one_run(tmp_path, srv):
    items = [x for pair in zip(make_items(5, "gpt"), make_items(5, "claude", start=5)) for x in pair]
    cfg = config(spec(srv, kind="openai", share=0.5), spec(srv, name="claude", kind="anthropic", share=0.5))
    summary = run(tmp_path, items, cfg)

    assert all(r.status == "accepted" for r in summary.results)
    assert [(r.teacher, r.model) for r in summary.results] == [("gpt", "loop-gpt"), ("claude", "loop-claude")] * 5
    apis = sorted(r["api"] for r in srv.requests)
    assert apis == ["anthropic"] * 5 + ["openai"] * 5
    assert {n: t["calls"] for n, t in summary.per_teacher.items()} == {"gpt": 5, "claude": 5}
    # each teacher priced by its own model
    gpt = summary.per_teacher["gpt"]
    assert gpt["cost_usd"] == pytest.approx((gpt["input_tokens"] * 1000 + gpt["output_tokens"] * 2000) / 1e6)


def test_reasoning_model_gets_max_completion_tokens_and_no_temperature(tmp_path, srv, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    o3 = TeacherSpec(name="o3", kind="openai", model="o3-mini", base_url=srv.openai_base_url)
    summary = run(tmp_path, make_items(1, "o3"), config(o3))
    assert summary.results[0].status == "accepted"
    params = srv.requests[0]["params"]
    assert params["max_completion_tokens"] == 1024
    assert "max_tokens" not in params and "temperature" not in params


# --- faults ----------------------------------------------------------------------------------


def test_429_waits_retry_after_then_succeeds(tmp_path, srv):
    srv.set_faults(["429:0.6"])
    t0 = time.perf_counter()
    summary = run(tmp_path, make_items(1, "gpt"), config(spec(srv)))
    elapsed = time.perf_counter() - t0

    r = summary.results[0]
    assert (r.status, r.tries) == ("accepted", 2)
    assert 0.55 <= elapsed < 5  # the Retry-After was waited out (and not much more)
    lines = read_ledger(tmp_path / "run.jsonl")
    assert [(l["outcome"], l["status"], l["retry_after_s"]) for l in lines] == [
        ("rate_limited", 429, 0.6), ("ok", 200, None)]
    assert len(srv.requests) == 2


def test_a_burst_of_429s_slows_the_teacher_without_stopping_it(tmp_path, srv):
    """A provider pacing a busy teacher: the first 30 requests get 429 with Retry-After 0.3 s.
    The run keeps going, every item is answered, and no request is sent inside a pause."""
    srv.set_faults(lambda n, r: "429:0.3" if n < 30 else None)
    summary = run(tmp_path, make_items(40, "gpt"), config(spec(srv, concurrency=16), max_consecutive_failures=5))
    assert summary.stopped is None
    assert [r.status for r in summary.results] == ["accepted"] * 40
    lines = read_ledger(tmp_path / "run.jsonl")
    assert sum(l["outcome"] == "rate_limited" for l in lines) == 30
    # after the first 429 is seen, the next request waits out (most of) its Retry-After
    def at(line):  # when the try's answer came back
        return datetime.fromisoformat(line["ts"]).timestamp()

    times = sorted(at(l) for l in lines)
    first_429 = min(at(l) for l in lines if l["outcome"] == "rate_limited")
    later = [t for t in times if t > first_429 + 0.05]
    assert later and min(later) >= first_429 + 0.25


def test_retry_after_is_capped_by_backoff_max(tmp_path, srv):
    srv.set_faults(["429:30"])
    t0 = time.perf_counter()
    summary = run(tmp_path, make_items(1, "gpt"), config(spec(srv), backoff_max_s=0.3))
    assert summary.results[0].status == "accepted"
    assert time.perf_counter() - t0 < 5


def test_5xx_and_garbage_body_are_retried(tmp_path, srv):
    srv.set_faults(["500", "503", "garbage_body"])
    summary = run(tmp_path, make_items(1, "gpt"), config(spec(srv)))
    assert (summary.results[0].status, summary.results[0].tries) == ("accepted", 4)
    assert outcomes(tmp_path / "run.jsonl") == ["server_error", "server_error", "bad_response", "ok"]
    assert len(srv.requests) == 4


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_timeout_then_success(tmp_path, srv, kind):
    srv.set_faults(["timeout"])
    t0 = time.perf_counter()
    summary = run(tmp_path, make_items(1, "t"), config(spec(srv, name="t", kind=kind), timeout_s=0.5))
    elapsed = time.perf_counter() - t0
    assert summary.results[0].status == "accepted"
    assert outcomes(tmp_path / "run.jsonl") == ["timeout", "ok"]
    assert 0.45 <= elapsed < 5  # gave up after ~timeout_s, not after the server's 30 s hang


def test_connection_refused_is_retried_then_failed(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = TeacherSpec(name="gpt", kind="openai_compatible", model="loop-gpt", base_url=f"http://127.0.0.1:{port}/v1")
    summary = run(tmp_path, make_items(1, "gpt"), config(dead, max_retries=1))
    assert (summary.results[0].status, summary.results[0].reason, summary.results[0].tries) == ("failed", "connection", 2)
    assert outcomes(tmp_path / "run.jsonl") == ["connection", "connection"]


def test_malformed_output_is_reasked(tmp_path, srv):
    srv.set_faults(["malformed"])
    summary = run(tmp_path, make_items(1, "gpt"), config(spec(srv)))

    r = summary.results[0]
    assert (r.status, r.tries) == ("accepted", 2)
    assert r.output.model_dump() == draft(0)
    lines = read_ledger(tmp_path / "run.jsonl")
    assert [(l["purpose"], l["outcome"], l["reason"]) for l in lines] == [
        ("ask", "invalid_output", "not_json"), ("reask", "ok", None)]
    # both tries' tokens are counted, on the item and in the run
    assert all(l["input_tokens"] > 0 and l["output_tokens"] > 0 for l in lines)
    assert r.input_tokens == sum(l["input_tokens"] for l in lines) == summary.input_tokens
    assert r.output_tokens == sum(l["output_tokens"] for l in lines)
    # the re-ask carries the bad answer and says what was wrong
    reask = srv.requests[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "Sure! Here is the answer: {oops"}
    assert reask[-1]["role"] == "user" and "not_json" in reask[-1]["content"] and "JSON" in reask[-1]["content"]


def test_still_invalid_after_max_reasks_is_quarantined_with_reason(tmp_path, srv):
    srv.set_faults(lambda n, req: "bad_shape")
    summary = run(tmp_path, make_items(1, "gpt"), config(spec(srv), max_reasks=2))
    r = summary.results[0]
    assert (r.status, r.reason, r.raw_text, r.tries) == ("invalid_output", "bad_shape", '{"q": 1}', 3)
    assert "turns" in r.detail
    assert r.output is None and r.input_tokens > 0
    assert [l["purpose"] for l in read_ledger(tmp_path / "run.jsonl")] == ["ask", "reask", "reask"]
    assert len(srv.requests) == 3


def test_wrong_turn_count_is_invalid(tmp_path, srv):
    items = make_items(1, "gpt", turns=1)
    items[0].expected_turns = 2
    summary = run(tmp_path, items, config(spec(srv), max_reasks=0))
    assert (summary.results[0].status, summary.results[0].reason) == ("invalid_output", "wrong_turn_count")
    assert summary.results[0].raw_text == json.dumps(draft(0))


def test_retries_exhausted_fails_with_last_error(tmp_path, srv):
    srv.set_faults(lambda n, req: "503")
    summary = run(tmp_path, make_items(1, "gpt"), config(spec(srv), max_retries=2))
    r = summary.results[0]
    assert (r.status, r.reason, r.tries) == ("failed", "server_error", 3)
    assert "503" in r.detail
    assert outcomes(tmp_path / "run.jsonl") == ["server_error"] * 3 == ["server_error"] * len(srv.requests)


def test_client_error_is_not_retried(tmp_path, srv):
    bad_path = TeacherSpec(name="gpt", kind="openai_compatible", model="loop-gpt",
                           base_url=srv.openai_base_url.replace("/v1", "/no-such-api"))
    summary = run(tmp_path, make_items(1, "gpt"), config(bad_path))
    r = summary.results[0]
    assert (r.status, r.reason, r.tries) == ("failed", "client_error", 1)
    assert [l["status"] for l in read_ledger(tmp_path / "run.jsonl")] == [404]


def test_every_try_is_in_the_ledger(tmp_path, srv):
    # a mixed fault plan over 12 items at concurrency 4: ledger lines == requests the server saw
    plan = ["429:0.2", None, "500", "malformed", None, "bad_shape", "garbage_body", None, "503", None] * 3
    srv.set_faults(plan)
    # retry and re-ask allowances above the plan's fault counts, so every item must end accepted
    summary = run(tmp_path, make_items(12, "gpt"), config(spec(srv, concurrency=4), max_retries=20, max_reasks=7))
    lines = read_ledger(tmp_path / "run.jsonl")
    assert len(lines) == len(srv.requests) == summary.calls
    assert all(r.status == "accepted" for r in summary.results)
    assert sum(r.tries for r in summary.results) == len(lines)
    assert [r["fault"] for r in srv.requests].count(None) == [l["outcome"] for l in lines].count("ok") == 12


# --- cache and resume ------------------------------------------------------------------------


def test_second_run_is_served_from_cache(tmp_path, srv):
    items = make_items(5, "gpt")
    srv.set_faults([None, "malformed", None, "500"])  # item 1 needs a re-ask, one try fails
    cfg = config(spec(srv, concurrency=1))
    first = run(tmp_path, items, cfg, "first")
    assert all(r.status == "accepted" for r in first.results)
    srv.reset()

    second = run(tmp_path, items, cfg, "second")
    assert srv.requests == []  # zero calls
    assert (second.calls, second.cost_usd) == (0, 0.0)
    assert second.cache_hits == 6  # 5 answers + the one re-asked bad answer
    strip = lambda r: (r.item_id, r.status, r.output, r.raw_text, r.input_tokens, r.output_tokens, r.cost_usd)  # noqa: E731
    assert [strip(r) for r in second.results] == [strip(r) for r in first.results]
    assert all(r.cached for r in second.results)
    assert set(outcomes(tmp_path / "second.jsonl")) == {"cached"}
    assert all(l["cost_usd"] == 0 for l in read_ledger(tmp_path / "second.jsonl"))


def test_cache_key_ignores_a_vendor_url_and_the_key(tmp_path, srv, monkeypatch):
    items = make_items(2, "gpt")
    run(tmp_path, items, config(spec(srv, kind="openai")))
    monkeypatch.setenv(KEY_ENV, "sk-another-key-456")
    with LoopbackLLM() as other:
        again = run(tmp_path, items, config(spec(other, kind="openai")), "again")
        assert other.requests == [] and again.cache_hits == 2
        # but a parameter that changes the answer is a different entry
        warmer = run(tmp_path, items, config(spec(other, kind="openai", temperature=0.2)), "warmer")
        assert len(other.requests) == 2 and warmer.calls == 2


def test_two_openai_compatible_servers_never_share_answers(tmp_path, srv):
    """Two local servers may serve different weights under one model id: the URL is in the key."""
    items = make_items(2, "gpt")
    run(tmp_path, items, config(spec(srv)))
    with LoopbackLLM() as other:
        again = run(tmp_path, items, config(spec(other)), "again")
        assert len(other.requests) == 2 and again.cache_hits == 0


def test_cache_key_and_store(tmp_path):
    msgs = [{"role": "user", "content": "hi"}]
    k = cache_key("openai", "m", msgs, {"temperature": 0.7})
    assert k == cache_key("openai", "m", [dict(m) for m in msgs], {"temperature": 0.7})
    assert len({k, cache_key("openai", "m2", msgs, {"temperature": 0.7}),
                cache_key("openai", "m", msgs, {"temperature": 0.2}),
                cache_key("anthropic", "m", msgs, {"temperature": 0.7}),
                cache_key("openai", "m", [{"role": "user", "content": "hi!"}], {"temperature": 0.7})}) == 5
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.get(k) is None
        cache.put(k, "text", 3, 4, "m")
    with ResponseCache(tmp_path / "c.sqlite") as cache:  # reopened: the put was committed
        hit = cache.get(k)
        assert (hit.text, hit.input_tokens, hit.output_tokens, hit.model) == ("text", 3, 4, "m")


# --- budget and sustained errors -------------------------------------------------------------


def test_budget_stops_cleanly_and_keeps_what_is_done(tmp_path, srv):
    items = make_items(12, "gpt")
    probe = run(tmp_path / "probe", items[:1], config(spec(srv)))
    per_call = probe.cost_usd
    srv.reset()
    budget = per_call * 2.5
    summary = run(tmp_path, items, config(spec(srv, concurrency=2), budget_usd=budget))

    statuses = [r.status for r in summary.results]
    accepted = [r for r in summary.results if r.status == "accepted"]
    rest = [r for r in summary.results if r.status != "accepted"]
    assert summary.stopped == "budget"
    assert len(accepted) == 3  # calls wait for the one in flight: the third reaches the line, no fourth starts
    assert all(r.output is not None for r in accepted)
    assert all((r.status, r.reason, r.tries) == ("not_run", "budget", 0) for r in rest)
    assert statuses.count("not_run") == 12 - len(accepted)
    assert budget <= summary.cost_usd < budget + per_call * 1.1  # only the last call passes the budget
    assert len(srv.requests) == summary.calls == len(accepted)


def test_sustained_errors_stop_the_teacher_in_bounded_time(tmp_path, srv):
    srv.set_faults(lambda n, req: "500")
    t0 = time.perf_counter()
    summary = run(tmp_path, make_items(40, "gpt"),
                  config(spec(srv, concurrency=4), max_consecutive_failures=6, max_retries=3))
    elapsed = time.perf_counter() - t0

    assert elapsed < 10
    assert summary.stopped == "teacher_failing:gpt"
    statuses = summary.counts()
    assert statuses.get("accepted", 0) == 0 and statuses["not_run"] >= 30
    assert all(r.reason == "server_error" for r in summary.results if r.status == "failed")
    assert all(r.reason == "teacher_failing" for r in summary.results if r.status == "not_run")
    assert summary.calls == len(srv.requests) <= 6 + 4  # stops within one round of the limit
    assert summary.per_teacher["gpt"]["final_concurrency"] < 4  # it also backed off


def test_one_failing_teacher_does_not_stop_the_other(tmp_path, srv):
    with LoopbackLLM(faults=lambda n, req: "500") as broken:
        items = make_items(6, "good") + make_items(6, "bad", start=6)
        cfg = config(spec(srv, name="good"), spec(broken, name="bad"), max_consecutive_failures=3, max_retries=1)
        summary = run(tmp_path, items, cfg)
    assert summary.stopped == "teacher_failing:bad"
    assert summary.per_teacher["good"]["statuses"] == {"accepted": 6}
    assert "accepted" not in summary.per_teacher["bad"]["statuses"]


# --- rate limits -----------------------------------------------------------------------------


def test_requests_per_minute_cap_slows_the_run(tmp_path, srv):
    t0 = time.perf_counter()
    summary = run(tmp_path, make_items(20, "gpt"), config(spec(srv, concurrency=8, requests_per_minute=600)))
    elapsed = time.perf_counter() - t0
    assert all(r.status == "accepted" for r in summary.results)
    # 600/min = 10/s with a one-second bucket: 10 at once, then 10 more over ~1 s
    assert 0.8 <= elapsed < 5


# --- keys ------------------------------------------------------------------------------------


def test_missing_key_is_a_config_error_naming_the_variable(tmp_path, srv, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV) as err:
        run(tmp_path, make_items(1, "gpt"), config(spec(srv)))
    assert PLANTED not in str(err.value) and srv.requests == []


def test_unknown_teacher_is_a_config_error(tmp_path, srv):
    with pytest.raises(ConfigError, match="nobody"):
        run(tmp_path, make_items(1, "nobody"), config(spec(srv)))


def test_planted_key_appears_nowhere(tmp_path, srv, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    srv.set_faults(["429:0.1", "500", "malformed", "garbage_body", None, "bad_shape"] * 2)
    items = make_items(4, "gpt") + make_items(4, "claude", start=4)
    cfg = config(spec(srv, concurrency=2), spec(srv, name="claude", kind="anthropic", concurrency=2), max_reasks=1)
    summary = run_items(items, cfg, cache_path=tmp_path / "cache.sqlite", ledger_path=tmp_path / "ledger.jsonl",
                        progress=True)
    assert all(r["auth_present"] for r in srv.requests)  # the key was sent...
    needle = PLANTED.encode()
    for f in tmp_path.iterdir():  # ...and is in no ledger, cache (db, wal, shm) or other file
        assert needle not in f.read_bytes(), f.name
    assert PLANTED not in repr(summary)
    captured = capsys.readouterr()
    assert PLANTED not in captured.out + captured.err
    assert PLANTED not in caplog.text
    # the SDKs and the HTTP client did log at DEBUG, so the check above had their text to search
    assert {r.name.split(".")[0] for r in caplog.records} >= {"openai", "anthropic"}


def test_error_details_are_redacted():
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(
        401, request=request, headers={"retry-after": "3"},
        json={"error": {"message": f"Incorrect API key provided: {PLANTED}", "type": "invalid_request_error"}},
    )
    exc = openai.AuthenticationError(f"Error code: 401 - Incorrect API key provided: {PLANTED}", response=response,
                                     body=None)
    err = classify(exc, (PLANTED,))
    assert (err.kind, err.status) == ("client_error", 401)
    assert PLANTED not in err.detail and PLANTED not in str(err) and "api_key_env" in err.detail
    assert "sk-live-abcdef123456" not in redact("key sk-live-abcdef123456 leaked")
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "2"}) == 2.0 and retry_after_seconds({}) is None


# --- event loops -----------------------------------------------------------------------------


def test_run_items_works_inside_a_running_event_loop(tmp_path, srv):
    async def flow():
        return run(tmp_path, make_items(2, "gpt"), config(spec(srv)))

    summary = asyncio.run(flow())
    assert [r.status for r in summary.results] == ["accepted", "accepted"]

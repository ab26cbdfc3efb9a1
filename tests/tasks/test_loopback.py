"""The loopback LLM server, driven through the real OpenAI and Anthropic SDKs (and distilabel):
envelopes, usage numbers, the draft responder, every fault kind, the request log, overlap of
latency, stop() under load, and the `python -m tasks.llm.loopback` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import openai
import pytest

from tasks.llm.loopback import BAD_SHAPE_TEXT, MALFORMED_TEXT, NO_DRAFT_ANSWER, LoopbackLLM, draft_responder

REPO = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-test-loopback-9f8e7d6c5b4a"
ANTHROPIC_KEY = "sk-ant-test-loopback-1a2b3c4d5e"
DRAFT = '{"turns": [{"question": "How fast?", "reasoning": "max of sog", "answer": "12.3 knots"}]}'
SYSTEM = "You are a maritime AIS analyst."
USER = f"AIS reports ...\n\nQuestion: How fast?\n\n<draft>{DRAFT}</draft>\nAnswer with JSON only."


def _openai(srv: LoopbackLLM, timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.openai_base_url, api_key=OPENAI_KEY, max_retries=0, timeout=timeout)


def _anthropic(srv: LoopbackLLM, timeout: float = 10.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.anthropic_base_url, api_key=ANTHROPIC_KEY, max_retries=0, timeout=timeout)


def _chat(client: openai.OpenAI, user: str = USER, **params):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return client.chat.completions.create(model="teacher-model", messages=messages, **params)


def _message(client: anthropic.Anthropic, user: str = USER):
    return client.messages.create(
        model="claude-test", max_tokens=256, system=SYSTEM, messages=[{"role": "user", "content": user}]
    )


@pytest.fixture
def srv():
    with LoopbackLLM() as server:
        yield server


# --- envelopes, usage, responders ----------------------------------------------------------


def test_openai_envelope_returns_the_draft_with_usage(srv):
    reply = _chat(_openai(srv), temperature=0.2, max_tokens=300, response_format={"type": "json_object"})
    assert reply.object == "chat.completion" and reply.model == "teacher-model" and reply.id
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == DRAFT
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == (len(SYSTEM) + len(USER)) // 4
    assert reply.usage.completion_tokens == len(DRAFT) // 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    [logged] = srv.requests
    assert logged["api"] == "openai" and logged["model"] == "teacher-model" and logged["fault"] is None
    assert logged["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert logged["params"]["temperature"] == 0.2 and logged["params"]["max_tokens"] == 300
    assert logged["params"]["response_format"] == {"type": "json_object"}


def test_anthropic_envelope_puts_the_system_prompt_first_in_the_log(srv):
    reply = _message(_anthropic(srv))
    assert reply.type == "message" and reply.role == "assistant" and reply.model == "claude-test"
    assert reply.content[0].type == "text" and reply.content[0].text == DRAFT
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens == (len(SYSTEM) + len(USER)) // 4
    assert reply.usage.output_tokens == len(DRAFT) // 4
    [logged] = srv.requests
    assert logged["api"] == "anthropic" and logged["model"] == "claude-test"
    assert logged["messages"][0] == {"role": "system", "content": SYSTEM}
    assert logged["messages"][1] == {"role": "user", "content": USER}
    assert logged["params"]["max_tokens"] == 256


def test_usage_is_at_least_one_token_and_no_draft_gives_the_placeholder(srv):
    reply = _openai(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == NO_DRAFT_ANSWER
    assert json.loads(NO_DRAFT_ANSWER)["turns"][0]["answer"] == "no draft"
    assert reply.usage.prompt_tokens == 1  # 2 characters // 4 is 0: at least 1


def test_draft_comes_from_the_last_user_message():
    request = {"messages": [
        {"role": "user", "content": "<draft>first</draft>"},
        {"role": "assistant", "content": "<draft>not me</draft>"},
        {"role": "user", "content": "again:\n<draft>\n{\"x\": 2}\n</draft>"},
    ]}  # fmt: skip
    assert draft_responder(request) == '\n{"x": 2}\n'


def test_list_content_blocks_are_read_as_text(srv):
    content = [{"type": "text", "text": "part one "}, {"type": "text", "text": "<draft>{\"k\": 1}</draft>"}]
    reply = _openai(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == '{"k": 1}'
    assert srv.requests[0]["messages"][0]["content"] == 'part one <draft>{"k": 1}</draft>'


def test_custom_responder_sees_the_request():
    seen = []

    def responder(request):
        seen.append(request)
        return f"{request['api']}:{request['model']}:{len(request['messages'])}"

    with LoopbackLLM(responder=responder) as server:
        assert _chat(_openai(server)).choices[0].message.content == "openai:teacher-model:2"
        assert _message(_anthropic(server)).content[0].text == "anthropic:claude-test:2"
    assert [r["api"] for r in seen] == ["openai", "anthropic"]


def test_a_failing_responder_is_a_500_not_a_dead_server():
    def responder(request):
        raise KeyError("boom")

    with LoopbackLLM(responder=responder) as server:
        with pytest.raises(openai.InternalServerError, match="responder failed"):
            _chat(_openai(server))
        server.responder = draft_responder
        assert _chat(_openai(server)).choices[0].message.content == DRAFT


def test_distilabel_openai_llm_reports_the_servers_token_counts(srv):
    from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(model="teacher-model", base_url=srv.openai_base_url, api_key=OPENAI_KEY, max_retries=0, timeout=10)
    llm.load()
    out = asyncio.run(llm.agenerate(input=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]))
    assert out["generations"] == [DRAFT]
    assert out["statistics"]["input_tokens"] == [(len(SYSTEM) + len(USER)) // 4]
    assert out["statistics"]["output_tokens"] == [len(DRAFT) // 4]


# --- faults --------------------------------------------------------------------------------


def test_429_carries_retry_after_in_both_headers(srv):
    srv.set_faults(["429", "429:0.2"])
    client = _openai(srv)
    with pytest.raises(openai.RateLimitError) as first:
        _chat(client)
    assert first.value.status_code == 429
    assert first.value.response.headers["retry-after"] == "1"
    assert first.value.response.headers["retry-after-ms"] == "1000"
    assert first.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as second:
        _chat(client)
    assert second.value.response.headers["retry-after"] == "0.2"
    assert second.value.response.headers["retry-after-ms"] == "200"
    assert _chat(client).choices[0].message.content == DRAFT  # the plan is used up: normal again
    assert [r["fault"] for r in srv.requests] == ["429", "429:0.2", None]


def test_anthropic_faults_have_anthropic_error_shapes(srv):
    srv.set_faults(["429:0.5", "500", "503"])
    client = _anthropic(srv)
    with pytest.raises(anthropic.RateLimitError) as limited:
        _message(client)
    assert limited.value.response.headers["retry-after"] == "0.5"
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as failed:
        _message(client)
    assert failed.value.status_code == 500 and failed.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        _message(client)
    assert overloaded.value.status_code == 503
    assert _message(client).content[0].text == DRAFT


def test_5xx_raise_internal_server_error(srv):
    srv.set_faults(["500", "503"])
    with pytest.raises(openai.InternalServerError) as e500:
        _chat(_openai(srv))
    assert e500.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as e503:
        _chat(_openai(srv))
    assert e503.value.status_code == 503


def test_timeout_fires_the_client_timeout_without_blocking_other_requests(srv):
    srv.set_faults(["timeout"])
    errors, done = [], threading.Event()

    def hang():
        try:
            _chat(_openai(srv, timeout=2.0))
        except Exception as exc:  # noqa: BLE001 - the test checks which one
            errors.append(exc)
        done.set()

    started = time.perf_counter()
    thread = threading.Thread(target=hang)
    thread.start()
    while not srv.requests:  # the hanging request is in, and owns the "timeout" entry
        time.sleep(0.01)
    assert _chat(_openai(srv)).choices[0].message.content == DRAFT
    assert not done.is_set()  # the other request answered while this one still hangs
    thread.join(10)
    assert isinstance(errors[0], openai.APITimeoutError)
    assert 1.9 < time.perf_counter() - started < 5

    srv.set_faults(["timeout"])
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        _chat(_openai(srv, timeout=0.5))
    assert time.perf_counter() - t0 < 2


def test_malformed_and_bad_shape_are_valid_envelopes_with_bad_content(srv):
    srv.set_faults(["malformed", "bad_shape"])
    client = _openai(srv)
    malformed = _chat(client)
    assert malformed.choices[0].message.content == MALFORMED_TEXT
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.choices[0].message.content)
    assert malformed.usage.completion_tokens == len(MALFORMED_TEXT) // 4
    bad_shape = _chat(client)
    assert json.loads(bad_shape.choices[0].message.content) == json.loads(BAD_SHAPE_TEXT)
    assert "turns" not in json.loads(bad_shape.choices[0].message.content)
    srv.set_faults(["malformed"])
    assert _message(_anthropic(srv)).content[0].text == MALFORMED_TEXT


def test_garbage_body_is_not_json(srv):
    srv.set_faults(["garbage_body", "garbage_body"])
    with pytest.raises(json.JSONDecodeError):
        _chat(_openai(srv))
    with pytest.raises(json.JSONDecodeError):
        _message(_anthropic(srv))
    assert [r["fault"] for r in srv.requests] == ["garbage_body", "garbage_body"]


def test_fault_callable_gets_the_request_number_and_request():
    calls = []

    def plan(n, request):
        calls.append((n, request["model"]))
        return "500" if n % 2 == 0 else None

    with LoopbackLLM(faults=plan) as server:
        client = _openai(server)
        outcomes = []
        for _ in range(4):
            try:
                _chat(client)
                outcomes.append("ok")
            except openai.InternalServerError:
                outcomes.append("500")
    assert outcomes == ["500", "ok", "500", "ok"]
    assert calls == [(0, "teacher-model"), (1, "teacher-model"), (2, "teacher-model"), (3, "teacher-model")]


def test_unknown_fault_is_refused_with_the_valid_kinds():
    with pytest.raises(ValueError, match="unknown loopback fault 'nope'.*garbage_body"):
        LoopbackLLM(faults=["nope"])
    with pytest.raises(ValueError, match="429:0.2"):
        LoopbackLLM(faults=["429:soon"])
    bad_plan = LoopbackLLM(faults=lambda n, request: "418")
    with bad_plan as server:  # a bad callable answer is a 500 that names the problem
        with pytest.raises(openai.InternalServerError, match="unknown loopback fault '418'"):
            _chat(_openai(server))


# --- request log ---------------------------------------------------------------------------


def test_request_log_never_holds_the_key(srv):
    _chat(_openai(srv))
    _message(_anthropic(srv))
    assert [r["auth_present"] for r in srv.requests] == [True, True]
    text = repr(srv.requests)
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
    assert "Bearer" not in text and "loopback-9f8e" not in text
    srv.reset()
    assert srv.requests == []
    _chat(_openai(srv))
    assert len(srv.requests) == 1


# --- concurrency and lifecycle -------------------------------------------------------------


def test_64_concurrent_requests_overlap_their_latency():
    async def burst(server):
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=OPENAI_KEY, max_retries=0, timeout=10)
        await _one(client)  # connection pool and SDK warmed up, outside the timing
        started = time.perf_counter()
        replies = await asyncio.gather(*(_one(client, i) for i in range(64)))
        elapsed = time.perf_counter() - started
        await client.close()
        return replies, elapsed

    async def _one(client, i=0):
        user = f"<draft>{{\"i\": {i}}}</draft>"
        reply = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": user}])
        return reply.choices[0].message.content

    with LoopbackLLM(latency_s=0.25) as server:
        replies, elapsed = asyncio.run(burst(server))
    assert replies == [f'{{"i": {i}}}' for i in range(64)]
    assert 0.25 <= elapsed < 1.5  # 64 x 0.25 s = 16 s if they did not overlap


def test_latency_delays_every_answer():
    with LoopbackLLM(latency_s=0.3) as server:
        started = time.perf_counter()
        _chat(_openai(server))
        assert time.perf_counter() - started >= 0.3


def test_stop_with_requests_in_flight_returns_quickly():
    server = LoopbackLLM(latency_s=20.0).start()
    errors = []

    def call():
        try:
            _chat(_openai(server, timeout=30))
        except Exception as exc:  # noqa: BLE001 - the connection is closed under it
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    while len(server.requests) < 3:
        time.sleep(0.01)
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 3
    for t in threads:
        t.join(5)
    assert len(errors) == 3 and all(isinstance(e, openai.APIConnectionError) for e in errors)
    with pytest.raises(openai.APIConnectionError):  # nothing listens any more
        _chat(_openai(server, timeout=2))
    server.stop()  # a second stop is a no-op


def test_a_taken_port_is_a_one_line_error():
    with LoopbackLLM() as server:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}.*--port"):
            LoopbackLLM(port=server.port).start()


def test_runs_as_a_separate_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.llm.loopback", "--port", "0", "--latency-s", "0.05"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        ready = proc.stdout.readline().strip()
        assert ready.startswith("ready http://127.0.0.1:") and ready.endswith("/v1"), ready
        base_url = ready.split(" ", 1)[1]
        client = openai.OpenAI(base_url=base_url, api_key=OPENAI_KEY, max_retries=0, timeout=10)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": USER}])
        assert reply.choices[0].message.content == DRAFT
        anthropic_client = anthropic.Anthropic(base_url=base_url[: -len("/v1")], api_key=ANTHROPIC_KEY, max_retries=0)
        assert _message(anthropic_client).content[0].text == DRAFT
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        with socket.socket() as probe:  # the port is free again
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert OPENAI_KEY not in proc.stderr.read()

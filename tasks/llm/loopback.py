"""A loopback LLM server for tests, benches and dry runs: speaks the OpenAI chat-completions API
(POST /v1/chat/completions) and the Anthropic Messages API (POST /v1/messages) on 127.0.0.1.

It answers every request with the text of a `responder` (default `draft_responder`: the JSON
draft the prompt carries between <draft> and </draft>), after a fixed latency, and can inject the
faults a real provider produces (429 with Retry-After, 5xx, a hang past the client's timeout,
non-JSON or wrong-shape content, a body that is not JSON). Every request is logged in
`requests` without its key.

    with LoopbackLLM(latency_s=0.25, faults=["429:0.2", None, "500"]) as srv:
        OpenAI(base_url=srv.openai_base_url, api_key="sk-test", max_retries=0)
        Anthropic(base_url=srv.anthropic_base_url, api_key="sk-ant-test", max_retries=0)

The server is aiohttp on its own event loop in a daemon thread; latency and hangs are
`asyncio.sleep`, so any number of requests overlap. As a separate process (for the bench, so the
server's CPU does not share the client's GIL):

    python -m tasks.llm.loopback --port 0 --latency-s 0.25
    # prints `ready http://127.0.0.1:PORT/v1` (the OpenAI base URL; Anthropic's is the same
    # without /v1) and serves until SIGTERM / SIGINT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

DRAFT_RE = re.compile(r"<draft>(.*?)</draft>", re.DOTALL)
NO_DRAFT_ANSWER = '{"turns": [{"question": "?", "reasoning": "", "answer": "no draft"}]}'
TIMEOUT_HANG_S = 30.0  # "timeout" fault: longer than any client timeout a test sets
STOP_GRACE_S = 0.2  # stop(): how long in-flight requests may finish before they are cancelled
MALFORMED_TEXT = "Sure! Here is the answer: {oops"
BAD_SHAPE_TEXT = '{"q": 1}'
GARBAGE_BODY = "<html><body>502 upstream hiccup</body></html>"
FAULT_KINDS = ("ok", "429", "500", "503", "timeout", "malformed", "bad_shape", "garbage_body")

Responder = Callable[[dict], str]
FaultPlan = list | Callable[[int, dict], "str | None"] | None


def draft_responder(request: dict) -> str:
    """The text between <draft> and </draft> in the latest user message that has one, verbatim;
    a one-turn placeholder answer when none has."""
    for message in reversed(request["messages"]):  # a re-ask's last message is the correction: look further back
        if message["role"] == "user":
            match = DRAFT_RE.search(message["content"])
            if match:
                return match.group(1)
    return NO_DRAFT_ANSWER


def check_fault(fault: str | None) -> str | None:
    """The fault name, validated: None / "ok", "429", "429:<seconds>", "500", "503", "timeout",
    "malformed", "bad_shape", "garbage_body"."""
    if fault is None or fault == "ok":
        return None
    if not isinstance(fault, str):
        raise ValueError(f"loopback fault {fault!r} is not a string; use one of {', '.join(FAULT_KINDS)} or '429:<seconds>'")
    if fault.startswith("429:"):
        try:
            seconds = float(fault[4:])
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            raise ValueError(f"loopback fault {fault!r}: the Retry-After after '429:' must be seconds >= 0, e.g. '429:0.2'")
        return fault
    if fault not in FAULT_KINDS:
        raise ValueError(f"unknown loopback fault {fault!r}; use one of {', '.join(FAULT_KINDS)} or '429:<seconds>'")
    return fault


def _text(content: Any) -> str:
    """Message content as one string: a string as is, a list of content blocks joined by their text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") if isinstance(block, dict) else str(block) for block in content)
    return "" if content is None else str(content)


def _request_record(api: str, body: dict, auth_present: bool) -> dict:
    messages = [{"role": str(m.get("role", "")), "content": _text(m.get("content"))} for m in body.get("messages") or []]
    if api == "anthropic" and body.get("system") is not None:
        messages.insert(0, {"role": "system", "content": _text(body["system"])})
    skip = {"model", "messages", "system"}
    return {
        "api": api,
        "model": body.get("model"),
        "messages": messages,
        "params": {k: v for k, v in body.items() if k not in skip},
        "fault": None,
        "auth_present": auth_present,
    }


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


def _error_response(api: str, status: int, kind: str, message: str, headers: dict | None = None) -> web.Response:
    if api == "anthropic":
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return web.json_response(body, status=status, headers=headers)


def _completion(api: str, model: str | None, messages: list[dict], text: str) -> dict:
    prompt_tokens = _tokens(sum(len(m["content"]) for m in messages))
    completion_tokens = _tokens(len(text))
    if api == "anthropic":
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class LoopbackLLM:
    """An OpenAI- and Anthropic-compatible server on loopback. A context manager, or .start()/.stop().

    responder: request dict -> assistant text (default draft_responder).
    latency_s: every response waits this long (asyncio.sleep, so requests overlap).
    faults: a list consumed one entry per request (None / "ok": a normal answer), or a callable
    (n, request) -> fault | None with n counting requests from 0; see check_fault for the kinds.
    log_requests: False keeps `requests` empty (a long-running server process nobody reads).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        latency_s: float = 0.0,
        faults: FaultPlan = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_requests: bool = True,
    ) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.responder = responder or draft_responder
        self.latency_s = float(latency_s)
        self.host = host
        self.port = port
        self.requests: list[dict] = []
        self.log_requests = log_requests
        self._lock = threading.Lock()
        self._count = 0
        self._faults: FaultPlan = None
        self.set_faults(faults)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None

    # --- public API ------------------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_faults(self, faults: FaultPlan) -> None:
        """Replace the fault plan (a list is consumed from its first entry on)."""
        if faults is not None and not callable(faults):
            faults = [check_fault(f) for f in faults]
        with self._lock:
            self._faults = faults

    def reset(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self.requests.clear()

    def start(self) -> "LoopbackLLM":
        if self._thread is not None:
            raise RuntimeError("LoopbackLLM is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"loopback server cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                "pick another --port (0: any free one)"
            ) from exc
        self.port = sock.getsockname()[1]
        started = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, started, failure), name=f"loopback-llm-{self.port}", daemon=True
        )
        self._thread.start()
        if not started.wait(10.0) or failure:
            self.stop()
            raise RuntimeError(f"loopback server did not start: {failure[0] if failure else 'no answer in 10 s'}")
        return self

    def stop(self) -> None:
        """Stop serving; in-flight requests get STOP_GRACE_S, then are cancelled. Never hangs."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive() and self._stopped is not None:
            try:
                loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:  # loop already closed
                pass
            thread.join(5.0)
        self._thread = None
        self._loop = None

    def __enter__(self) -> "LoopbackLLM":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- server ----------------------------------------------------------------------------

    def _serve(self, sock: socket.socket, started: threading.Event, failure: list) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(sock, started))
        except BaseException as exc:  # reported to start() when it happens before "started"
            failure.append(exc)
            started.set()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            loop.close()

    async def _main(self, sock: socket.socket, started: threading.Event) -> None:
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)  # base_url given without /v1
        app.router.add_post("/v1/messages", self._anthropic)
        # access_log=None: a log line per request would cost more than the answer itself;
        # handler_cancellation: a client that gave up (timeout) frees its "timeout" handler
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=STOP_GRACE_S)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, shutdown_timeout=STOP_GRACE_S, backlog=1024)
        await site.start()
        started.set()
        try:
            await self._stopped.wait()
        finally:
            await asyncio.wait_for(self._runner.cleanup(), timeout=3.0)

    def _log(self, record: dict) -> None:
        if self.log_requests:
            with self._lock:
                self.requests.append(record)

    def _next_fault(self, record: dict) -> str | None:
        fault = None
        with self._lock:
            n = self._count
            self._count += 1
            plan = self._faults
            if isinstance(plan, list):
                fault = plan.pop(0) if plan else None
        if callable(plan):
            fault = check_fault(plan(n, record))
        return fault

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._answer("openai", request)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._answer("anthropic", request)

    async def _answer(self, api: str, request: web.Request) -> web.StreamResponse:
        auth_present = bool(request.headers.get("authorization") or request.headers.get("x-api-key"))
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            return _error_response(api, 400, "invalid_request_error", f"request body is not JSON: {exc}")
        record = _request_record(api, body, auth_present)
        if body.get("stream"):
            self._log(record)
            return _error_response(api, 400, "invalid_request_error", "the loopback server does not stream; send stream=false")
        try:
            fault = self._next_fault(record)
        except Exception as exc:  # a fault callable that raised or returned an unknown kind
            fault = None
            record["fault"] = f"plan_error: {exc}"
            self._log(record)
            return _error_response(api, 500, "api_error", f"loopback fault plan failed: {exc}")
        record["fault"] = fault
        self._log(record)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

        if fault is not None and fault.startswith("429"):
            seconds = float(fault[4:]) if ":" in fault else 1.0
            headers = {"retry-after": f"{seconds:g}", "retry-after-ms": str(round(seconds * 1000))}
            kind = "rate_limit_error" if api == "anthropic" else "rate_limit_exceeded"
            return _error_response(api, 429, kind, "Rate limit reached (loopback fault)", headers)
        if fault in ("500", "503"):
            kind = ("api_error" if fault == "500" else "overloaded_error") if api == "anthropic" else "server_error"
            return _error_response(api, int(fault), kind, f"loopback fault {fault}")
        if fault == "timeout":
            await asyncio.sleep(TIMEOUT_HANG_S)
        if fault == "garbage_body":
            # claims JSON, is not: what a broken proxy or a cut-off body looks like to the SDK
            return web.Response(status=200, text=GARBAGE_BODY, content_type="application/json")

        if fault == "malformed":
            text = MALFORMED_TEXT
        elif fault == "bad_shape":
            text = BAD_SHAPE_TEXT
        else:
            try:
                text = self.responder(record)
            except Exception as exc:
                return _error_response(api, 500, "api_error", f"loopback responder failed: {type(exc).__name__}: {exc}")
        return web.json_response(_completion(api, record["model"], record["messages"], text))


# the judge prompt's parts (tasks/judge.py judge_messages): required values and tagged answers
JUDGE_REQUIRED_RE = re.compile(r"^- (\w+) = (.+?) \[\w+, required\]$", re.MULTILINE)
JUDGE_ANSWER_RE = re.compile(r'<answer turn="\d+">(.*?)</answer>', re.DOTALL)
JUDGE_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
JUDGE_REFUSAL_RE = re.compile(r"insufficient|cannot be determined|cannot answer|no (?:ais )?(?:records|reports)", re.IGNORECASE)


def judge_responder(request: dict) -> str:
    """A judge for tests that scores by something checkable: 5 when the answers state every
    required computed value (a number within 0.5, a time as its HH:MM, a code or name verbatim),
    else 1 naming the first one missing; an unanswerable question gets 5 only for an answer that
    says the data is insufficient. Reads the prompt from any user message, so a re-ask is
    answered as well."""
    prompt = next((m["content"] for m in request["messages"] if m["role"] == "user" and "<answer" in m["content"]), None)
    if prompt is None:
        return json.dumps({"score": 1, "reason": "there is no answer to grade"})
    answers = " ".join(JUDGE_ANSWER_RE.findall(prompt))
    numbers = [float(n) for n in JUDGE_NUMBER_RE.findall(answers)]
    if "UNANSWERABLE" in prompt:
        refused = JUDGE_REFUSAL_RE.search(answers) is not None
        reason = "it says the data is insufficient" if refused else "it guesses instead of saying the data is insufficient"
        return json.dumps({"score": 5 if refused else 1, "reason": reason})
    for name, value in JUDGE_REQUIRED_RE.findall(prompt):
        stated = value.split("(write as ", 1)[1].split()[0] if "(write as " in value else value
        if stated.startswith('"'):  # names and labels come JSON-quoted (data, never instructions)
            stated = json.loads(stated)
        if JUDGE_NUMBER_RE.fullmatch(stated):
            found = any(abs(n - float(stated)) <= 0.5 for n in numbers)
        else:
            found = stated in answers
        if not found:
            return json.dumps({"score": 1, "reason": f"the answer does not state {name} = {stated}"})
    return json.dumps({"score": 5, "reason": "every required value is stated as computed"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the loopback LLM (OpenAI + Anthropic APIs) until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on the ready line)")
    parser.add_argument("--latency-s", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args(argv)
    if args.latency_s < 0:
        parser.error(f"--latency-s must be >= 0, got {args.latency_s}")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        srv = LoopbackLLM(latency_s=args.latency_s, host=args.host, port=args.port, log_requests=False).start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"ready {srv.openai_base_url}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

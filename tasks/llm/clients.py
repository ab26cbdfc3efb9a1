"""Teacher clients: distilabel LLMs (OpenAILLM, AnthropicLLM) behind one `complete()` call.

`build_llm(spec, cfg)` returns a `TeacherClient` whose `complete(messages)` makes exactly ONE
HTTP request (SDK retries are off: the runner's retry loop counts and logs every try) and
returns the text with its token usage, or raises `CallError(kind, ...)` with kind one of
ERROR_KINDS. distilabel's OpenAILLM / AnthropicLLM build the request and read the response and
its token usage; the small subclasses below give them the SDKs' aiohttp transport with a pool
sized to the teacher's concurrency, a float timeout, and work around two incompatibilities and
one per-call cost of the installed SDK versions (each explained where it is).

Keys come from the environment variable the config names (never from the config itself) and
never appear in an error message: every detail passes through `redact`.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
from distilabel.models.llms import AnthropicLLM, OpenAILLM
from distilabel.models.llms.base import AsyncLLM
from distilabel.models.llms.utils import prepare_output

from tasks.config import TeacherConfig, TeacherSpec
from tasks.errors import ConfigError
from tasks.llm.keys import api_key

log = logging.getLogger(__name__)

ERROR_KINDS = ("rate_limited", "server_error", "timeout", "connection", "client_error", "bad_response")
# errors that mean "the provider is overloaded": back off, and lower the concurrency
OVERLOAD_KINDS = ("rate_limited", "server_error", "timeout", "connection")
RETRYABLE_KINDS = ("rate_limited", "server_error", "timeout", "connection", "bad_response")

_KEYLIKE_RE = re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-]{6,}")
_DETAIL_MAX = 300
# OpenAI reasoning models (o1, o3-mini, o4-mini, gpt-5...) reject max_tokens and any temperature
# but the default; they take max_completion_tokens instead
_REASONING_MODEL_RE = re.compile(r"^(o\d|gpt-5)")


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int


class CallError(Exception):
    """One failed HTTP try. kind: rate_limited / server_error / timeout / connection /
    client_error / bad_response; retry_after_s from the Retry-After headers when sent."""

    def __init__(self, kind: str, retry_after_s: float | None = None, status: int | None = None, detail: str = "") -> None:
        super().__init__(f"{kind}" + (f" (HTTP {status})" if status else "") + (f": {detail}" if detail else ""))
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.status = status
        self.detail = detail


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without any of `secrets` and without anything shaped like an API key, cut short."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _KEYLIKE_RE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def classify(exc: BaseException, secrets: tuple[str, ...] = ()) -> CallError:
    """An SDK / transport exception as a CallError (the detail never carries a key)."""
    if isinstance(exc, CallError):
        return exc
    detail = redact(f"{type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError, TimeoutError)):
        # the SDKs' aiohttp transport reports a refused connection as a connect *timeout*
        if any(isinstance(cause, aiohttp.ClientConnectorError) for cause in _causes(exc)):
            return CallError("connection", detail=detail)
        return CallError("timeout", detail=detail)
    if isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError)):
        return CallError("connection", detail=detail)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, (openai.APIStatusError, anthropic.APIStatusError)) and isinstance(status, int):
        retry_after = retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
        if status == 429:
            return CallError("rate_limited", retry_after, status, detail)
        if status >= 500 or status in (408, 409):  # 408 request timeout, 409 conflict: try again
            return CallError("server_error", retry_after, status, detail)
        if status in (401, 403):
            detail = f"{detail} (check the key in the teacher's api_key_env variable)"
        return CallError("client_error", None, status, detail)
    # HTTP 200 with a body the SDK or distilabel could not read (not JSON, missing fields)
    return CallError("bad_response", detail=detail)


def _http_client(sdk: Any, concurrency: int, timeout_s: float) -> Any:
    """The SDK's aiohttp transport with a pool sized to the concurrency.

    aiohttp (C-accelerated HTTP parsing) costs about a millisecond less CPU per call than the
    default httpx2 transport, which decides the throughput at high concurrency on a small box;
    the default pool also keeps only 100 idle connections, so a higher concurrency would
    reconnect on every call."""
    import httpx2

    pool = max(100, 2 * concurrency)
    return sdk.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
        timeout=timeout_s,
        verify=_ssl_context(),
    )


@functools.cache
def _ssl_context() -> Any:
    # the SDK's default TLS context, built once per process: loading the CA bundle takes ~0.1 s,
    # which every run (and every client) would otherwise pay again
    import httpx2

    return httpx2.create_ssl_context()


class _TeacherOpenAILLM(OpenAILLM):
    """distilabel's OpenAILLM with two changes for a fast, high-concurrency client:
    - load() builds only the async client, with a float timeout (OpenAILLM types `timeout` as
      int) and the aiohttp transport with a pool sized to the teacher's concurrency;
    - the chat request distilabel builds is posted with the SDK's `client.post` (its documented
      raw-request method: same auth, errors and response parsing) instead of
      `chat.completions.create`, whose type-driven walk over the request body costs ~1 ms of
      CPU per call and changes nothing in a plain chat request: a third of the client's CPU."""

    request_timeout_s: float = 60.0
    pool_concurrency: int = 8

    def load(self) -> None:
        AsyncLLM.load(self)  # distilabel's logger; the sync client OpenAILLM.load() adds is unused
        self._aclient = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key.get_secret_value(),
            max_retries=self.max_retries,
            timeout=self.request_timeout_s,
            http_client=_http_client(openai, self.pool_concurrency, self.request_timeout_s),
        )

    async def _generate_chat_completion(  # type: ignore[override]
        self,
        input: Any,
        num_generations: int = 1,
        max_new_tokens: int = 128,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: str | list[str] | None = None,
        response_format: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Any:
        if isinstance(input, tuple) or self.structured_output is not None:  # instructor path: distilabel's own
            return await super()._generate_chat_completion(
                input, num_generations, max_new_tokens, logprobs, top_logprobs, frequency_penalty,
                presence_penalty, temperature, top_p, stop, response_format, extra_body,
            )
        body: dict[str, Any] = {  # the fields distilabel sends
            "messages": input, "model": self.model, "logprobs": logprobs, "top_logprobs": top_logprobs,
            "max_tokens": max_new_tokens, "n": num_generations, "frequency_penalty": frequency_penalty,
            "presence_penalty": presence_penalty, "temperature": temperature, "top_p": top_p, "stop": stop,
        }
        if response_format is not None:
            body["response_format"] = response_format
        return await self.post_chat({**body, **(extra_body or {})})

    async def post_chat(self, body: dict[str, Any]) -> Any:
        """POST /chat/completions with `body` as is; distilabel's output dict with token usage.

        The SDK still sends the request and raises its typed errors (429, 5xx, timeouts); the
        body is read as JSON here rather than built into a ChatCompletion model, which cost
        ~0.5 ms of CPU per call for the two fields a teacher needs (measured by bench/generate.py)."""
        import httpx2

        response = await self._aclient.post("/chat/completions", body=body, cast_to=httpx2.Response)
        raw = await response.aread()
        try:
            data = json.loads(raw)
            choice = (data.get("choices") or [{}])[0]
            usage = data.get("usage") or {}
            text = (choice.get("message") or {}).get("content")
            tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise CallError("bad_response", None, response.status_code,
                            f"the chat completion is not the OpenAI shape ({type(exc).__name__})") from None
        if text is not None and not isinstance(text, str):
            raise CallError("bad_response", None, response.status_code, "message.content is not text")
        return prepare_output([text], input_tokens=[tokens[0]], output_tokens=[tokens[1]])


class _TeacherAnthropicLLM(AnthropicLLM):
    """distilabel's AnthropicLLM with two repairs for anthropic>=2:
    - load() skips `_check_model_exists`, which builds an `AsyncAnthropic()` from the environment
      and rejects any model id missing from the SDK's Literal list (new models, aliases, a
      loopback server's); it also sizes the connection pool to the teacher's concurrency;
    - agenerate() sends temperature only when the installed SDK still takes it: anthropic 2.x
      removed temperature/top_p/top_k from messages.create, and distilabel 1.5.3 always passes
      temperature (a TypeError on every call)."""

    pool_concurrency: int = 8

    def load(self) -> None:
        AsyncLLM.load(self)
        self._aclient = anthropic.AsyncAnthropic(
            api_key=self.api_key.get_secret_value(),
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=_http_client(anthropic, self.pool_concurrency, self.timeout),
        )

    async def agenerate(  # type: ignore[override]
        self, input: list[dict], max_tokens: int = 128, temperature: float | None = None
    ) -> dict:
        messages = [m for m in input if m["role"] != "system"]
        system = "\n\n".join(m["content"] for m in input if m["role"] == "system")
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "stream": False}
        if system:
            kwargs["system"] = system
        if temperature is not None and anthropic_takes_temperature():
            kwargs["temperature"] = temperature
        completion = await self._aclient.messages.create(**kwargs)
        text = "".join(block.text for block in completion.content if getattr(block, "type", None) == "text")
        return prepare_output([text], **self._get_llm_statistics(completion))


@functools.cache
def anthropic_takes_temperature() -> bool:
    """Whether the installed anthropic SDK's messages.create still has a temperature argument."""
    from anthropic.resources.messages import AsyncMessages

    return "temperature" in inspect.signature(AsyncMessages.create).parameters




class TeacherClient:
    """One teacher's distilabel LLM and the parameters it sends. `complete()` = one HTTP try."""

    def __init__(self, spec: TeacherSpec, cfg: TeacherConfig) -> None:
        if spec.kind == "template":
            raise ConfigError(f"teacher {spec.name!r} is the offline template teacher; it has no API client")
        self.spec = spec
        self.name = spec.name
        self.model: str = spec.model  # type: ignore[assignment]  # TeacherSpec requires it for API kinds
        self.api = "anthropic" if spec.kind == "anthropic" else "openai"
        self.timeout_s = cfg.timeout_s
        key = api_key(spec)
        self._secrets = (key,)
        self._reasoning = spec.kind == "openai" and bool(_REASONING_MODEL_RE.match(self.model))
        if self.api == "anthropic":
            if anthropic_takes_temperature() and spec.temperature > 1:
                raise ConfigError(
                    f"teacher {spec.name!r}: Anthropic accepts temperature 0..1, got {spec.temperature}; set it <= 1"
                )
            extra = {"base_url": spec.base_url} if spec.base_url else {}
            self.llm: Any = _TeacherAnthropicLLM(
                model=self.model, api_key=key, max_retries=0, timeout=cfg.timeout_s,
                pool_concurrency=spec.concurrency, **extra,
            )
            self.params: dict[str, Any] = {"max_tokens": spec.max_tokens}
            if anthropic_takes_temperature():
                self.params["temperature"] = spec.temperature
        else:
            # base_url None: the SDK's default (OPENAI_BASE_URL or api.openai.com)
            self.llm = _TeacherOpenAILLM(
                model=self.model, base_url=spec.base_url, api_key=key, max_retries=0,
                request_timeout_s=cfg.timeout_s, pool_concurrency=spec.concurrency,
            )
            if self._reasoning:
                self.params = {"max_completion_tokens": spec.max_tokens}
            else:
                self.params = {"max_new_tokens": spec.max_tokens, "temperature": spec.temperature}
            if spec.json_mode:
                self.params["response_format"] = {"type": "json_object"}
        if "temperature" not in self.params:
            log.info("teacher %s: %s takes no temperature; the configured %s is not sent",
                     spec.name, self.model, spec.temperature)
        self.max_tokens = spec.max_tokens
        self.llm.load()

    async def complete(self, messages: list[dict], params: dict[str, Any] | None = None) -> Completion:
        """One HTTP try. Raises CallError; a hard deadline backs up the SDK's own timeout
        (httpx times each read, not the whole response)."""
        params = self.params if params is None else params
        try:
            async with asyncio.timeout(self.timeout_s * 1.5 + 1.0):
                if self._reasoning:
                    output = await self._reasoning_call(messages, params)
                else:
                    output = await self.llm.agenerate(input=[dict(m) for m in messages], **params)
        except (asyncio.CancelledError, TypeError):  # TypeError: a bug in how the SDK is called
            raise
        except Exception as exc:  # every failure of the try becomes a CallError the runner can act on
            raise classify(exc, self._secrets) from None
        text = (output.get("generations") or [None])[0]
        stats = output.get("statistics") or {}
        return Completion(
            text="" if text is None else str(text),
            input_tokens=int((stats.get("input_tokens") or [0])[0] or 0),
            output_tokens=int((stats.get("output_tokens") or [0])[0] or 0),
        )

    async def _reasoning_call(self, messages: list[dict], params: dict[str, Any]) -> dict:
        # distilabel's agenerate always sends max_tokens and temperature, which reasoning models
        # reject; send the request with the same client and let distilabel read the completion
        return await self.llm.post_chat({"messages": [dict(m) for m in messages], "model": self.model, **params})

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def aclose(self) -> None:
        client = getattr(self.llm, "_aclient", None)
        if client is not None:
            await client.close()


def build_llm(spec: TeacherSpec, cfg: TeacherConfig) -> TeacherClient:
    """The client for one API teacher. Raises ConfigError when its key variable is not set."""
    return TeacherClient(spec, cfg)

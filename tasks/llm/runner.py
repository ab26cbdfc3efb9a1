"""Run work items through API teachers: cache, rate limits, retries, re-asks, budget, ledger.

`run_items(items, cfg, cache_path, ledger_path)` sends each item's messages to its teacher and
returns one ItemResult per item, in input order, plus run totals. Per item:

1. cache lookup by (API, model, messages, parameters): a hit replays the stored answer, no call;
2. otherwise one call at a time through the teacher's rate limiter and adaptive concurrency
   limit; 429 waits its Retry-After (capped at backoff_max_s) and pauses the whole teacher for
   that long; 5xx / timeout / connection / unreadable body wait an exponential backoff with
   jitter from backoff_base_s; other 4xx are not retried; after max_retries the item "failed";
3. the text is parsed (tasks.llm.output); invalid output is re-asked up to max_reasks times, with
   the bad answer and what was wrong appended to the conversation; still invalid: the item is
   "invalid_output" with its raw text and the reason.

Every try (and every cached replay) is one ledger line. Stops, never hangs: under a budget a call
starts only when the spend so far, the expected cost of the calls in flight and its own fit
(else it waits for the calls in flight), so at most one call passes budget_usd; once the spend
reaches it no new call starts. A teacher whose last
max_consecutive_failures tries all failed stops; items not done then are "not_run" with the
reason, everything done so far is kept. Per-item failures never raise; a missing key raises
ConfigError before any call.

Tokens and cost on an ItemResult are what producing that item took (cached answers included, so
a resumed run reports the same numbers); the RunSummary's totals are what this run paid.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.config import Price, TeacherConfig, TeacherSpec
from tasks.errors import ConfigError
from tasks.llm.cache import ResponseCache, cache_key
from tasks.llm.clients import OVERLOAD_KINDS, RETRYABLE_KINDS, CallError, TeacherClient, build_llm
from tasks.llm.ledger import Ledger
from tasks.llm.limits import AdaptiveConcurrency, RateLimiter, estimate_tokens
from tasks.llm.output import OutputInvalid, TeacherOutput, parse_output

log = logging.getLogger(__name__)

ITEM_STATUSES = ("accepted", "invalid_output", "failed", "not_run")
# workers per teacher = this x its concurrency: items waiting out a backoff hold a worker but no
# request slot, so the slots stay busy with other items
_WORKERS_PER_SLOT = 2


@dataclass
class WorkItem:
    item_id: str
    teacher: str
    messages: list[dict]
    expected_turns: int
    category: str
    # how a reply is read (raises OutputInvalid) and what the re-ask after an unreadable one says;
    # None: the teacher's {"turns": [...]} JSON with expected_turns turns. The LLM judge reads scores.
    parse: Callable[[str | None], Any] | None = None
    reask: Callable[[OutputInvalid], str] | None = None


@dataclass
class ItemResult:
    item_id: str
    teacher: str
    model: str
    status: str  # "accepted" | "invalid_output" | "failed" | "not_run"
    output: TeacherOutput | Any  # what the item's parse returned; None unless accepted
    raw_text: str | None
    reason: str | None
    detail: str | None
    tries: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool


@dataclass
class RunSummary:
    results: list[ItemResult]
    stopped: str | None  # None, or why generation stopped early: "budget", "teacher_failing:<name>" (comma-joined)
    calls: int
    cache_hits: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    per_teacher: dict[str, dict]

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.status for r in self.results))


def cost_usd(price: Price, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


def reask_message(bad: OutputInvalid, expected_turns: int) -> str:
    return (
        f"Your reply could not be used ({bad.reason}: {bad.detail}). Answer again with only one JSON object, "
        f'no prose and no code fence: {{"turns": [{{"question": "...", "reasoning": "...", "answer": "..."}}]}} '
        f"with exactly {expected_turns} turn(s)."
    )


@dataclass
class _Teacher:
    spec: TeacherSpec
    client: TeacherClient
    price: Price
    limiter: RateLimiter
    concurrency: AdaptiveConcurrency
    consecutive_failures: int = 0
    stopped: bool = False
    output_tokens_seen: int = 0
    replies_seen: int = 0

    def expected_cost(self, input_tokens: int) -> float:
        """What a call is likely to cost before it is made: its prompt, and the mean output of this
        teacher's replies so far (the output cap until there is one)."""
        out = self.output_tokens_seen / self.replies_seen if self.replies_seen else self.client.max_tokens
        return cost_usd(self.price, input_tokens, int(out))


@dataclass
class _Acc:
    """What one item has used so far."""

    tries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = True
    last_error: CallError | None = None


@dataclass
class _Reply:
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float  # paid in this run (0 for a cached replay)
    latency_s: float
    status: int | None
    cached: bool


class _Stopped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass
class _Run:
    cfg: TeacherConfig
    teachers: dict[str, _Teacher]
    cache: ResponseCache
    ledger: Ledger
    spent_usd: float = 0.0
    reserved_usd: float = 0.0  # expected cost of the calls in flight
    in_flight: int = 0
    stop_reasons: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    # --- stops -------------------------------------------------------------------------------

    def _check_stop(self, t: _Teacher) -> None:
        budget = self.cfg.budget_usd
        if budget is not None and (self.spent_usd >= budget or "budget" in self.stop_reasons):
            if "budget" not in self.stop_reasons:
                self.stop_reasons.append("budget")
                log.warning("teacher budget reached: spent $%.4f of $%.4f; no new calls", self.spent_usd, budget)
            raise _Stopped("budget")
        if t.stopped:
            raise _Stopped("teacher_failing")

    async def _admit(self, t: _Teacher, next_cost: float) -> None:
        """Under a budget, a call starts while what is spent, the expected cost of the calls in
        flight and its own fit the budget; otherwise it waits for the calls in flight to report
        their real cost. With nothing in flight it starts while anything is left, so the last
        call is the only one that can pass the line."""
        budget = self.cfg.budget_usd
        while True:
            await t.limiter.wait_pause()  # a 429's Retry-After may have arrived while this waited for a slot
            self._check_stop(t)
            if budget is None or not self.in_flight or self.spent_usd + self.reserved_usd + next_cost <= budget:
                return
            await asyncio.sleep(0.01)

    def _failed_try(self, t: _Teacher, err: CallError) -> None:
        t.consecutive_failures += 1
        if not t.stopped and t.consecutive_failures >= self.cfg.max_consecutive_failures:
            t.stopped = True
            self.stop_reasons.append(f"teacher_failing:{t.spec.name}")
            log.warning(
                "teacher %s stopped: its last %d tries all failed (last: %s); its remaining items are not run",
                t.spec.name, t.consecutive_failures, err.kind,
            )

    def _backoff_s(self, attempt: int, err: CallError) -> float:
        cap = self.cfg.backoff_max_s
        if err.retry_after_s is not None:
            # a little jitter on top, so the workers it paused do not all return in the same instant
            return min(cap, err.retry_after_s * self.rng.uniform(1.0, 1.1))
        return min(cap, self.cfg.backoff_base_s * 2 ** (attempt - 1)) * self.rng.uniform(0.5, 1.0)

    # --- one ask (with retries) --------------------------------------------------------------

    async def _ask(self, item: WorkItem, t: _Teacher, messages: list[dict], purpose: str, acc: _Acc) -> _Reply:
        client = t.client
        key = cache_key(t.spec.kind, client.model, messages, client.params, t.spec.base_url)
        hit = self.cache.get(key)
        if hit is not None:
            acc.tries += 1
            acc.input_tokens += hit.input_tokens
            acc.output_tokens += hit.output_tokens
            acc.cost_usd += cost_usd(t.price, hit.input_tokens, hit.output_tokens)
            return _Reply(hit.text, hit.input_tokens, hit.output_tokens, 0.0, 0.0, None, cached=True)
        acc.cached = False
        est = estimate_tokens(messages, client.max_tokens)
        attempt = 0
        while True:
            self._check_stop(t)
            await t.limiter.acquire(est)
            round_started = await t.concurrency.acquire()
            expected = t.expected_cost(est - client.max_tokens)
            try:
                await self._admit(t, expected)  # the waits may have outlasted the budget or the teacher
            except _Stopped:
                t.concurrency.release(round_started)
                raise
            acc.tries += 1
            started = time.perf_counter()
            self.reserved_usd += expected
            self.in_flight += 1
            try:
                completion = await client.complete(messages)
            except CallError as err:
                latency = time.perf_counter() - started
                t.concurrency.release(round_started, overloaded=err.kind in OVERLOAD_KINDS)
                t.limiter.correct(est, 0)
                self.ledger.record(
                    item_id=item.item_id, teacher=t.spec.name, model=client.model, try_=acc.tries, purpose=purpose,
                    outcome=err.kind, status=err.status, input_tokens=0, output_tokens=0, cost_usd=0.0,
                    latency_s=latency, retry_after_s=err.retry_after_s, reason=err.detail,
                )
                acc.last_error = err
                # a 429 is the provider pacing us, not failing: it slows the teacher (Retry-After,
                # lower concurrency) and only counts toward stopping it once the item runs out of tries
                if err.kind != "rate_limited":
                    self._failed_try(t, err)
                if err.kind not in RETRYABLE_KINDS or attempt >= self.cfg.max_retries:
                    if err.kind == "rate_limited":
                        self._failed_try(t, err)
                    raise
                attempt += 1
                delay = self._backoff_s(attempt, err)
                if err.kind == "rate_limited" and err.retry_after_s is not None:
                    t.limiter.pause_for(delay)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                t.concurrency.release(round_started)
                raise
            finally:
                self.reserved_usd -= expected
                self.in_flight -= 1
            latency = time.perf_counter() - started
            t.concurrency.release(round_started, succeeded=True)
            t.consecutive_failures = 0
            used = completion.input_tokens + completion.output_tokens
            t.limiter.correct(est, used)
            cost = cost_usd(t.price, completion.input_tokens, completion.output_tokens)
            self.spent_usd += cost
            t.output_tokens_seen += completion.output_tokens
            t.replies_seen += 1
            acc.input_tokens += completion.input_tokens
            acc.output_tokens += completion.output_tokens
            acc.cost_usd += cost
            self.cache.put(key, completion.text, completion.input_tokens, completion.output_tokens, client.model)
            return _Reply(completion.text, completion.input_tokens, completion.output_tokens, cost, latency, 200, cached=False)

    # --- one item ----------------------------------------------------------------------------

    async def process(self, item: WorkItem, t: _Teacher) -> ItemResult:
        acc = _Acc()
        model = t.client.model

        def result(status: str, output=None, raw=None, reason=None, detail=None) -> ItemResult:
            return ItemResult(
                item_id=item.item_id, teacher=item.teacher, model=model, status=status, output=output,
                raw_text=raw, reason=reason, detail=detail, tries=acc.tries, input_tokens=acc.input_tokens,
                output_tokens=acc.output_tokens, cost_usd=round(acc.cost_usd, 10), cached=acc.cached and acc.tries > 0,
            )

        messages = list(item.messages)
        last_bad: OutputInvalid | None = None
        last_text: str | None = None
        for reask in range(self.cfg.max_reasks + 1):
            purpose = "reask" if reask else "ask"
            try:
                reply = await self._ask(item, t, messages, purpose, acc)
            except _Stopped as stop:
                err = acc.last_error
                if stop.reason == "teacher_failing" and err is not None and last_bad is None:
                    detail = f"{err.detail} (teacher stopped after {self.cfg.max_consecutive_failures} failed tries in a row)"
                    return result("failed", raw=last_text, reason=err.kind, detail=detail)
                return result("not_run", raw=last_text, reason=stop.reason, detail=_STOP_DETAIL[stop.reason])
            except CallError as err:
                return result("failed", raw=last_text, reason=err.kind, detail=err.detail)
            try:
                output = item.parse(reply.text) if item.parse else parse_output(reply.text, item.expected_turns)
            except OutputInvalid as bad:
                self._record_reply(item, t, reply, purpose, acc, "invalid_output", bad.reason)
                last_bad, last_text = bad, reply.text
                messages = [
                    *messages,
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": item.reask(bad) if item.reask else reask_message(bad, item.expected_turns)},
                ]
                continue
            self._record_reply(item, t, reply, purpose, acc, "ok", None)
            return result("accepted", output=output, raw=reply.text)
        assert last_bad is not None
        return result("invalid_output", raw=last_text, reason=last_bad.reason, detail=last_bad.detail)

    def _record_reply(
        self, item: WorkItem, t: _Teacher, reply: _Reply, purpose: str, acc: _Acc, outcome: str, reason: str | None
    ) -> None:
        self.ledger.record(
            item_id=item.item_id, teacher=t.spec.name, model=t.client.model, try_=acc.tries, purpose=purpose,
            outcome="cached" if reply.cached else outcome, status=reply.status, input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens, cost_usd=reply.cost_usd, latency_s=reply.latency_s, reason=reason,
        )

    # --- all items ---------------------------------------------------------------------------

    async def run(self, items: list[WorkItem], bar: Any) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(items)
        queues: dict[str, deque[int]] = {name: deque() for name in self.teachers}
        for i, item in enumerate(items):
            queues[item.teacher].append(i)

        async def worker(t: _Teacher, queue: deque[int]) -> None:
            while queue:
                i = queue.popleft()
                results[i] = await self.process(items[i], t)
                if bar is not None:
                    bar.update(1)

        workers = [
            worker(self.teachers[name], queue)
            for name, queue in queues.items()
            for _ in range(min(len(queue), _WORKERS_PER_SLOT * self.teachers[name].spec.concurrency))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for t in self.teachers.values():
                try:
                    await t.client.aclose()
                except Exception as exc:  # closing a pool must not hide the run's results
                    log.debug("closing teacher %s client: %s", t.spec.name, type(exc).__name__)
        return [r for r in results if r is not None]


_STOP_DETAIL = {
    "budget": "teacher.budget_usd reached before this item was done; raise it and re-run (the cache keeps what is done)",
    "teacher_failing": "its teacher stopped after teacher.max_consecutive_failures failed tries in a row; re-run to resume",
}


def _run_in_fresh_loop(factory: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # called from inside a running event loop (an async flow, a notebook): use a loop of our own
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher-run") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _teachers_for(items: list[WorkItem], cfg: TeacherConfig) -> dict[str, TeacherSpec]:
    specs = {t.name: t for t in cfg.teachers}
    needed: dict[str, TeacherSpec] = {}
    for item in items:
        spec = specs.get(item.teacher)
        if spec is None:
            raise ConfigError(
                f"work item {item.item_id!r} names teacher {item.teacher!r}, which is not in teacher.teachers "
                f"{sorted(specs)}"
            )
        if spec.kind == "template":
            raise ConfigError(f"teacher {spec.name!r} is the offline template teacher; run_items runs API teachers only")
        if item.expected_turns < 1:
            raise ValueError(f"work item {item.item_id!r}: expected_turns must be >= 1, got {item.expected_turns}")
        needed[spec.name] = spec
    ids = Counter(item.item_id for item in items)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"work item ids must be unique; repeated: {dupes[:5]}")
    return needed


def run_items(
    items: list[WorkItem],
    cfg: TeacherConfig,
    cache_path: Path,
    ledger_path: Path,
    progress: bool = False,
) -> RunSummary:
    """Generate every item with its teacher; see the module docstring. Raises ConfigError for a
    missing key or an unknown teacher, before any call."""
    specs = _teachers_for(items, cfg)
    prices = cfg.price_table()

    async def main() -> tuple[list[ItemResult], _Run]:
        clients: dict[str, TeacherClient] = {}
        try:
            for name, spec in specs.items():
                clients[name] = build_llm(spec, cfg)
        except BaseException:
            for client in clients.values():
                await client.aclose()
            raise
        teachers = {
            name: _Teacher(
                spec=spec, client=clients[name], price=prices[spec.model],  # type: ignore[index]
                limiter=RateLimiter(spec.requests_per_minute, spec.tokens_per_minute),
                concurrency=AdaptiveConcurrency(spec.concurrency),
            )
            for name, spec in specs.items()
        }
        with ResponseCache(cache_path) as cache, Ledger(ledger_path) as ledger:
            run = _Run(cfg=cfg, teachers=teachers, cache=cache, ledger=ledger)
            bar = _progress_bar(len(items)) if progress else None
            try:
                results = await run.run(items, bar)
            finally:
                if bar is not None:
                    bar.close()
            return results, run

    results, run = _run_in_fresh_loop(main)
    return _summarize(results, run)


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="teacher", unit="item")


def _summarize(results: list[ItemResult], run: _Run) -> RunSummary:
    totals = run.ledger.summary()
    per_teacher: dict[str, dict] = {}
    for name, t in run.teachers.items():
        mine = [r for r in results if r.teacher == name]
        per_teacher[name] = {
            **totals["teachers"].get(name, {}),
            "model": t.client.model,
            "items": len(mine),
            "statuses": dict(Counter(r.status for r in mine)),
            "stopped": "teacher_failing" if t.stopped else None,
            "final_concurrency": t.concurrency.limit,
        }
    overall = totals["overall"]
    summary = RunSummary(
        results=results,
        stopped=",".join(run.stop_reasons) or None,
        calls=overall["calls"],
        cache_hits=overall["cache_hits"],
        input_tokens=overall["input_tokens"],
        output_tokens=overall["output_tokens"],
        cost_usd=overall["cost_usd"],
        per_teacher=per_teacher,
    )
    log.info(
        "teacher run: %d items %s; %d calls, %d cache hits, %d+%d tokens, $%.4f%s",
        len(results), summary.counts(), summary.calls, summary.cache_hits, summary.input_tokens,
        summary.output_tokens, summary.cost_usd, f"; stopped: {summary.stopped}" if summary.stopped else "",
    )
    return summary

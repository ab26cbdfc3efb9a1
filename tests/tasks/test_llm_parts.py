"""The teacher runtime's pure parts: output parsing, the ledger's totals, the rate limiter and the
adaptive concurrency limit (real asyncio, real files; no server)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tasks.llm.ledger import Ledger, read_ledger
from tasks.llm.limits import AdaptiveConcurrency, RateLimiter, estimate_tokens
from tasks.llm.output import OutputInvalid, parse_output

ONE = {"turns": [{"question": "How fast was vessel 366000001?", "reasoning": "mean of 3 reports", "answer": "12.3 knots"}]}


# --- parse_output ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(ONE),
        "```json\n" + json.dumps(ONE, indent=2) + "\n```",
        "Sure! Here is the JSON you asked for:\n" + json.dumps(ONE) + "\nLet me know if you need more.",
        "```\n" + json.dumps(ONE) + "\n```",
        json.dumps(ONE["turns"]),  # a bare list of turns
        json.dumps(ONE["turns"][0]),  # one bare turn
    ],
)
def test_parse_output_accepts_one_json_object_in_its_usual_wrappings(text):
    out = parse_output(text, 1)
    assert out.model_dump() == ONE


def test_parse_output_strips_and_coerces():
    out = parse_output('{"turns": [{"question": "  Q?  ", "reasoning": null, "answer": 12.5, "extra": 1}]}', 1)
    turn = out.turns[0]
    assert (turn.question, turn.reasoning, turn.answer) == ("Q?", "", "12.5")


@pytest.mark.parametrize(
    ("text", "turns", "reason", "detail_has"),
    [
        ("", 1, "empty_text", "no text"),
        (None, 1, "empty_text", "no text"),
        ("   \n", 1, "empty_text", "no text"),
        ("Sure! Here is the answer: {oops", 1, "not_json", "no JSON object"),
        (json.dumps(ONE) + " and also " + json.dumps(ONE), 1, "not_json", "2 JSON objects"),
        ('{"q": 1}', 1, "bad_shape", "turns"),
        ('{"turns": [{"question": "Q?", "answer": "   "}]}', 1, "bad_shape", "answer"),
        ('{"turns": [{"question": "Q?"}]}', 1, "bad_shape", "answer"),
        ('{"turns": []}', 1, "bad_shape", "turns"),
        ("42", 1, "bad_shape", "int"),
        (json.dumps(ONE), 2, "wrong_turn_count", "expected 2 turn(s), got 1"),
    ],
)
def test_parse_output_says_why_not(text, turns, reason, detail_has):
    with pytest.raises(OutputInvalid) as err:
        parse_output(text, turns)
    assert err.value.reason == reason
    assert detail_has in err.value.detail


# --- ledger ----------------------------------------------------------------------------------


def test_ledger_lines_and_summary(tmp_path):
    path = tmp_path / "ledger.jsonl"
    common = dict(model="m", status=None, latency_s=0.1)
    with Ledger(path) as ledger:
        ledger.record(item_id="a", teacher="t1", try_=1, purpose="ask", outcome="rate_limited", input_tokens=0,
                      output_tokens=0, cost_usd=0.0, retry_after_s=1.0, **common)
        ledger.record(item_id="a", teacher="t1", try_=2, purpose="ask", outcome="invalid_output", input_tokens=100,
                      output_tokens=10, cost_usd=0.002, reason="not_json", **common)
        ledger.record(item_id="a", teacher="t1", try_=3, purpose="reask", outcome="ok", input_tokens=130,
                      output_tokens=12, cost_usd=0.003, **common)
        ledger.record(item_id="b", teacher="t2", try_=1, purpose="ask", outcome="cached", input_tokens=90,
                      output_tokens=9, cost_usd=0.0, **common)
        with pytest.raises(ValueError, match="outcome"):
            ledger.record(item_id="b", teacher="t2", try_=2, purpose="ask", outcome="weird", input_tokens=0,
                          output_tokens=0, cost_usd=0.0, **common)
        summary = ledger.summary()
    assert len(read_ledger(path)) == 4  # flushed line by line, nothing for the rejected outcome
    t1, t2, overall = summary["teachers"]["t1"], summary["teachers"]["t2"], summary["overall"]
    assert (t1["calls"], t1["retries"], t1["reasks"], t1["input_tokens"], t1["output_tokens"]) == (3, 1, 1, 230, 22)
    assert t1["cost_usd"] == pytest.approx(0.005)
    assert (t2["calls"], t2["cache_hits"], t2["input_tokens"], t2["cost_usd"]) == (0, 1, 0, 0.0)
    assert overall["tries"] == 4 and overall["outcomes"] == {"rate_limited": 1, "invalid_output": 1, "ok": 1, "cached": 1}


# --- limits ----------------------------------------------------------------------------------


def test_estimate_tokens():
    assert estimate_tokens([{"role": "user", "content": "x" * 400}], 100) == 200


def test_rate_limiter_spaces_requests():
    async def go():
        limiter = RateLimiter(requests_per_minute=1200)  # 20/s, bucket of 20
        t0 = time.perf_counter()
        await asyncio.gather(*(limiter.acquire(10) for _ in range(30)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(go())
    assert 0.4 <= elapsed < 2.0  # 20 at once, 10 more at 20/s


def test_token_limiter_lets_an_oversized_call_through_and_then_waits():
    async def go():
        limiter = RateLimiter(tokens_per_minute=6000)  # 100 tokens/s, bucket of 100
        t0 = time.perf_counter()
        await limiter.acquire(1000)  # bigger than the bucket: goes, the bucket goes into debt
        first = time.perf_counter() - t0
        limiter.correct(1000, 50)  # it used only 50: most of the debt is given back
        await limiter.acquire(50)
        return first, time.perf_counter() - t0

    first, second = asyncio.run(go())
    assert first < 0.1 and second < 0.5


def test_pause_holds_every_caller():
    async def go():
        limiter = RateLimiter()
        limiter.pause_for(0.3)
        t0 = time.perf_counter()
        await asyncio.gather(limiter.acquire(1), limiter.acquire(1))
        return time.perf_counter() - t0

    assert 0.28 <= asyncio.run(go()) < 1.0


def test_adaptive_concurrency_halves_once_per_round_and_recovers():
    async def go():
        sem = AdaptiveConcurrency(8)
        rounds = [await sem.acquire() for _ in range(8)]
        assert sem.in_flight == 8
        for r in rounds:  # 8 overloads from the same round: one cut
            sem.release(r, overloaded=True)
        assert (sem.limit, sem.in_flight) == (4, 0)
        r = await sem.acquire()
        sem.release(r, overloaded=True)
        assert sem.limit == 2  # a failure in a new round cuts again
        for _ in range(2 + 3 + 4):
            r = await sem.acquire()
            sem.release(r, succeeded=True)
        return sem.limit

    assert asyncio.run(go()) == 5  # +1 after `limit` successes in a row: 2 -> 3 -> 4 -> 5


def test_adaptive_concurrency_never_exceeds_its_limit():
    async def go():
        sem = AdaptiveConcurrency(3)
        peak = 0

        async def job():
            nonlocal peak
            r = await sem.acquire()
            peak = max(peak, sem.in_flight)
            await asyncio.sleep(0.01)
            sem.release(r, succeeded=True)

        await asyncio.gather(*(job() for _ in range(30)))
        return peak, sem.in_flight

    assert asyncio.run(go()) == (3, 0)


def test_adaptive_concurrency_cancelled_waiter_frees_its_place():
    async def go():
        sem = AdaptiveConcurrency(1)
        r = await sem.acquire()
        waiter = asyncio.ensure_future(sem.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        sem.release(r)
        await asyncio.wait_for(sem.acquire(), 1.0)  # the slot is free, not held by the cancelled waiter
        return sem.in_flight

    assert asyncio.run(go()) == 1

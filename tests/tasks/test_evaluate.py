from __future__ import annotations

import importlib.util
import json
import logging
import os
import re

import pytest
import yaml
from transformers import AutoTokenizer

from tasks.config import EvaluateConfig, TeacherConfig, TeacherSpec, ValidateConfig
from tasks.errors import ConfigError
from tasks.evaluate import (
    METRICS,
    chat_form,
    compare_models,
    cost_report,
    evaluate_task,
    expected_values,
    gate_verdict,
    write_lm_eval_task,
)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, chat_dataset, tiny_student):
    return write_lm_eval_task(
        chat_dataset["eval"], tmp_path_factory.mktemp("lm_eval_task"), tokenizer_from=str(tiny_student)
    )


@pytest.fixture(scope="module")
def metrics(task_dir):
    """The task's utils.py, imported the way lm-eval imports it."""
    spec = importlib.util.spec_from_file_location("tidewright_task_utils", task_dir / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_token_f1_on_hand_made_cases(metrics):
    answer = "Vessel 366123456 averaged 12.4 knots."
    assert metrics.token_f1(answer, answer) == 1.0
    assert metrics.token_f1("The vessel AVERAGED 12.4 knots", "vessel averaged 12.4 knots!") == 1.0
    assert metrics.token_f1("moored at anchor", "averaged 12.4 knots") == 0.0
    # 3 of 4 tokens shared both ways ("the" is an article and does not count): P = R = 3/4.
    assert metrics.token_f1("vessel averaged 12.4 knots", "the vessel averaged 13.1 knots") == pytest.approx(0.75)
    # P = 2/2, R = 2/4: F1 = 2 * 1 * 0.5 / 1.5.
    assert metrics.token_f1("12.4 knots", "averaged 12.4 knots today") == pytest.approx(2 / 3)
    # A number keeps its decimal point: 12.4 is not 124.
    assert metrics.token_f1("124 knots", "12.4 knots") == pytest.approx(0.5)
    assert metrics.token_f1("", "") == 1.0 and metrics.token_f1("", "12.4 knots") == 0.0


def test_exact_match_ignores_surrounding_whitespace_only(metrics):
    assert metrics.exact_match("  12.4 knots.\n", "12.4 knots.") == 1.0
    assert metrics.exact_match("12.4 knots", "12.4 knots.") == 0.0
    doc = {"answer": "Vessel 1 averaged 12.4 knots.", "answerable": True, "question": "What did vessel 1 average?",
           "expected": [{"kind": "number", "value": 12.43, "tol": 0.051}]}
    assert metrics.process_results(doc, [" Vessel 1 averaged 12.4 knots. "]) == {
        "exact_match": 1.0, "token_f1": 1.0, "numeric_match": 1.0, "correctly_refused": None, "false_refusal": 0.0,
    }


def test_numeric_match_within_the_facts_tolerance(metrics):
    speed = {"kind": "number", "value": 12.43, "tol": 0.051}
    assert metrics.numeric_match("It averaged 12.4 knots.", [speed]) == 1.0
    assert metrics.numeric_match("It averaged 12.5 knots.", [speed]) == 0.0  # 0.07 off
    assert metrics.numeric_match("It averaged 124 knots.", [speed]) == 0.0
    assert metrics.numeric_match("No number at all.", [speed]) == 0.0
    assert metrics.numeric_match("anything", []) is None  # nothing to state: the metric does not apply
    # one statement per expected value: two 0.0 kn values need two zeros
    zeros = [{"kind": "number", "value": 0.0, "tol": 0.051}] * 2
    assert metrics.numeric_match("0.0 knots", zeros) == 0.0
    assert metrics.numeric_match("0.0 knots at first, 0.0 knots at the end", zeros) == 1.0
    # times are minutes of the day, to the minute; a time's digits are not numbers, nor is a date
    arrival = {"kind": "time", "value": 6 * 60 + 17, "tol": 1.0}
    assert metrics.numeric_match("It arrived at 06:17 UTC on 2024-01-15.", [arrival]) == 1.0
    assert metrics.numeric_match("It arrived at 06:19 UTC.", [arrival]) == 0.0
    assert metrics.numeric_match("It arrived at 6 17 2024.", [arrival]) == 0.0
    # hemisphere letters give the sign of a position; a range's dash is not a minus sign
    lon = {"kind": "number", "value": -118.24013, "tol": 0.00051}
    lat = {"kind": "number", "value": 33.70012, "tol": 0.00051}
    assert metrics.numeric_match("at 33.70012° N, 118.24013° W", [lat, lon]) == 1.0
    assert metrics.numeric_match("at 33.70012° N, 118.24013° E", [lat, lon]) == 0.0
    assert metrics.numeric_match("between 12-15 knots", [{"kind": "number", "value": 15.0, "tol": 0.051}], "12 to 15") == 1.0
    # a degenerate generation is not a statement of 0
    assert metrics.numeric_match("0" * 40, [{"kind": "number", "value": 0.0, "tol": 0.051}]) == 0.0
    # times wrap at midnight, as the validator's do
    assert metrics.numeric_match("at 00:00 UTC", [{"kind": "time", "value": 1439.5, "tol": 1.0}]) == 1.0


def test_numeric_match_fails_an_answer_that_also_states_made_up_numbers(metrics):
    speed = [{"kind": "number", "value": 12.43, "tol": 0.051}]
    reference = "Vessel 366123456 averaged 12.4 knots between 06:00 and 07:00 UTC (limit 30 knots)."
    question = "What was the average speed of vessel 366123456 between 06:00 and 07:00 UTC?"
    # numbers the reference or the question states too are fine; values near the expected one too
    assert metrics.numeric_match("366123456 averaged 12.4 kn from 06:00 to 07:00, under 30", speed, reference, question) == 1.0
    assert metrics.numeric_match("12.4 knots, i.e. 12.43 knots", speed, reference, question) == 1.0
    # a made-up value, or the records copied into the answer, is no match
    assert metrics.numeric_match("12.4 knots, peaking at 17.2", speed, reference, question) == 0.0
    table = "06:00|40.71234|-74.01234|12.1\n06:05|40.71301|-74.01100|12.6"
    assert metrics.numeric_match(f"12.4 knots. {table}", speed, reference, question) == 0.0
    assert metrics.numeric_match("12.4 knots at 06:35", speed, reference, question) == 0.0


def test_refusals_are_scored_on_the_items_they_apply_to(metrics):
    unanswerable = {"answer": "The data is insufficient to answer.", "answerable": False, "expected": [], "question": "?"}
    scored = metrics.process_results(unanswerable, ["The records hold no reports from it; the data is insufficient."])
    assert (scored["correctly_refused"], scored["false_refusal"], scored["numeric_match"]) == (1.0, None, None)
    assert metrics.process_results(unanswerable, ["It averaged 12.4 knots."])["correctly_refused"] == 0.0
    answerable = {"answer": "It averaged 12.4 knots.", "answerable": True, "question": "?",
                  "expected": [{"kind": "number", "value": 12.4, "tol": 0.051}]}
    refusing = metrics.process_results(answerable, ["The data is insufficient to answer."])
    assert (refusing["false_refusal"], refusing["correctly_refused"], refusing["numeric_match"]) == (1.0, None, 0.0)
    assert metrics.mean_defined([1.0, None, 0.0]) == 0.5 and metrics.mean_defined([None]) == -1.0


def test_expected_values_are_the_last_turns_required_numbers_and_times():
    vcfg = ValidateConfig()
    example = {
        "answerable": True,
        "messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                     {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}],
        "grounding": json.dumps([
            {"name": "mean_sog", "kind": "speed_kn", "value": 12.43, "required": True, "turn": 0},
            {"name": "arrival", "kind": "time", "value": "2024-01-15T06:17:30", "required": True, "turn": 1},
            {"name": "distance", "kind": "distance_nm", "value": 3.21, "required": True, "turn": 1},
            {"name": "limit", "kind": "speed_kn", "value": 30.0, "required": False, "turn": 1},
            {"name": "port", "kind": "entity", "value": "USLAX", "required": True, "turn": 1},
        ]),
    }
    values = expected_values(example, vcfg)
    assert [(v["kind"], round(v["value"], 2)) for v in values] == [("time", 377.5), ("number", 3.21)]
    assert values[0]["tol"] == pytest.approx(vcfg.minutes_tolerance) and values[1]["tol"] == pytest.approx(vcfg.distance_tolerance_nm)
    assert expected_values({**example, "answerable": False}, vcfg) == []


def test_a_dialogue_reaches_a_chat_api_as_one_user_message_with_its_transcript():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
    system, user = chat_form(messages)
    assert system == "S"
    assert user == "Question: Q1\n\nYour answer: A1\n\nFollow-up question: Q2"
    assert chat_form(messages[:3]) == ("S", "Q1")


def test_gate_verdict_names_the_categories_that_did_not_improve():
    def side(overall, per):
        return {"token_f1": overall, "per_category": {c: {"token_f1": v} for c, v in per.items()}}

    base = side(0.10, {"movement": 0.1, "identity": 0.2, "safety": None})
    verdict = gate_verdict(base, side(0.15, {"movement": 0.3, "identity": 0.2, "safety": None}), "token_f1", 0.02)
    assert verdict["passed"] and verdict["gain"] == pytest.approx(0.05)
    assert verdict["failed_categories"] == ["identity"]
    assert not gate_verdict(base, side(0.11, {"movement": 0.3, "identity": 0.2, "safety": None}), "token_f1", 0.02)["passed"]
    # no score at all (a metric that applies to no item) is no pass
    assert not gate_verdict(side(None, {}), side(None, {}), "token_f1", 0.0)["passed"]


def test_task_prompts_are_the_training_prompts(task_dir, chat_dataset, tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    rows = [json.loads(line) for line in (task_dir / "tidewright_ais.jsonl").read_text().splitlines()]
    originals = [json.loads(line) for line in chat_dataset["eval"].read_text().splitlines()]
    assert len(rows) == len(originals) == 12
    for row, original in zip(rows, originals):
        messages = original["messages"]
        assert row["prompt"] == tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        assert row["answer"] == messages[-1]["content"]
        assert (row["id"], row["category"], row["difficulty"], row["answerable"]) == (
            original["id"],
            original["category"],
            original["difficulty"],
            original["answerable"],
        )


def test_task_yaml_points_at_its_own_copy_of_the_data(task_dir):
    text = (task_dir / "tidewright_ais.yaml").read_text()
    config = yaml.load(text.replace("!function", "!!str"), Loader=yaml.SafeLoader)
    assert config["dataset_path"] == "json"
    assert config["dataset_kwargs"]["data_files"]["test"] == str(task_dir / "tidewright_ais.jsonl")
    assert config["test_split"] == "test" and config["output_type"] == "generate_until"
    assert config["generation_kwargs"]["until"] == ["<|im_end|>"]
    assert [m["metric"] for m in config["metric_list"]] == list(METRICS)
    chat = yaml.load((task_dir / "tidewright_ais_chat.yaml").read_text().replace("!function", "!!str"), Loader=yaml.SafeLoader)
    assert (chat["task"], chat["description"], chat["doc_to_text"]) == ("tidewright_ais_chat", "system", "user")
    assert chat["dataset_kwargs"] == config["dataset_kwargs"]


def test_task_name_must_be_an_identifier(tmp_path, chat_dataset, tiny_student):
    with pytest.raises(ConfigError, match="task name"):
        write_lm_eval_task(chat_dataset["eval"], tmp_path, "bad name!", tokenizer_from=str(tiny_student))




# --- scoring base, tuned and teacher on the same items -------------------------------------------

TOKEN = re.compile(r"\d+(?:[.:]\d+)*|[^\W\d_]+")


def independent_token_f1(prediction: str, reference: str) -> float:
    """SQuAD F1 written out again, from the definition, to check the task's utils.py against."""
    words = lambda text: [t for t in TOKEN.findall(text.lower()) if t not in {"a", "an", "the"}]  # noqa: E731
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def _values(text: str) -> tuple[list[float], list[float]]:
    times = [int(h) * 60 + int(m) for h, m in re.findall(r"(\d{1,2}):(\d{2})", text)]
    rest = re.sub(r"\d{1,2}:\d{2}(?::\d{2})?|\d{4}-\d{2}-\d{2}", " ", text)
    numbers = [float(x) for x in re.findall(r"(?<![\w.])\d{1,12}(?:\.\d+)?(?!\d)", rest)]
    return numbers, times


def independent_numeric_match(prediction: str, expected: list[dict], reference: str, question: str) -> float | None:
    if not expected:
        return None
    numbers, times = _values(prediction)
    for value in expected:
        pool = times if value["kind"] == "time" else numbers
        gap = (lambda x: min(abs(x - value["value"]), 1440 - abs(x - value["value"]))) if value["kind"] == "time" else (
            lambda x: abs(x - value["value"]))
        match = [x for x in pool if gap(x) <= value["tol"]]
        if not match:
            return 0.0
        pool.remove(match[0])
    (ref_n, ref_t), (q_n, q_t) = _values(reference), _values(question)
    for pool, known, kind in ((numbers, ref_n + q_n, "number"), (times, ref_t + q_t, "time")):
        for x in pool:
            if not any(v["kind"] == kind and abs(x - v["value"]) <= v["tol"] for v in expected) and x not in known:
                return 0.0
    return 1.0


def recompute(rows: list[dict]) -> dict[str, float | None]:
    """Each metric's mean over the items it applies to, from the saved generations alone."""
    refusal = re.compile(r"insufficient|cannot be determined|cannot answer|no (?:ais )?(?:records|reports)|not in the data|not present", re.I)
    per_item = []
    for row in rows:
        pred = row["prediction"]
        answerable = row["answerable"] is not False
        per_item.append({
            "exact_match": float(pred.strip() == row["answer"].strip()),
            "token_f1": independent_token_f1(pred, row["answer"]),
            "numeric_match": independent_numeric_match(pred, row["expected"], row["answer"], row["question"]) if answerable else None,
            "correctly_refused": None if answerable else float(bool(refusal.search(pred))),
            "false_refusal": float(bool(refusal.search(pred))) if answerable else None,
        })
    out = {}
    for metric in METRICS:
        values = [item[metric] for item in per_item if item[metric] is not None]
        out[metric] = sum(values) / len(values) if values else None
    return out


PLANTED_KEY = "sk-planted-eval-0123456789abcdef"


def corrupting_teacher(rows_by_user: dict[str, dict], corrupt: set[str]):
    """A loopback responder that answers with the reference answer, except for the items in
    `corrupt`: one number changed (or, unanswerable, a made-up speed instead of a refusal)."""
    def respond(request: dict) -> str:
        user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        if isinstance(user, list):  # Anthropic content blocks
            user = "".join(block["text"] for block in user)
        row = rows_by_user[user]
        if row["id"] not in corrupt:
            return row["answer"]
        if row["answerable"] is False:
            return "It averaged 9.9 knots."
        # a value, not the 9-digit MMSI, everywhere the answer states it: 12.4 -> 19.4, 5 -> 12
        value = re.compile(r"(?<![\d.:])\d{1,3}(\.\d)?(?![\d:]|\.\d)")
        first = value.search(row["answer"])
        wrong = f"{float(first[0]) + 7:.{1 if first[1] else 0}f}"
        return value.sub(lambda m: wrong if m[0] == first[0] else m[0], row["answer"])
    return respond


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_base_tuned_and_teacher_are_scored_on_the_same_items_and_rescored_from_their_generations(
    tmp_path, trained, tiny_student, chat_dataset, monkeypatch, caplog, kind
):
    from tasks.llm.loopback import LoopbackLLM

    result, _ = trained
    cfg = EvaluateConfig(limit=9, max_gen_toks=16, batch_size=3)
    eval_dir = tmp_path / "eval"
    items = [json.loads(line) for line in chat_dataset["eval"].read_text().splitlines()][: cfg.limit]
    corrupt = {items[i]["id"] for i in (0, 1, 4, 8)}  # one of each category, and the unanswerable item 1
    assert items[1]["answerable"] is False
    rows_by_user = {chat_form(item["messages"])[1]: item | {"answer": item["messages"][-1]["content"]} for item in items}
    monkeypatch.setenv("PLANTED_EVAL_KEY", PLANTED_KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with LoopbackLLM(responder=corrupting_teacher(rows_by_user, corrupt)) as server, caplog.at_level(logging.DEBUG):
        # the base_url a teacher is configured with for generation (the SDKs' form) serves scoring too
        base_url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
        teacher = TeacherSpec(name="teacher", kind=kind, model="gpt-4o" if kind == "openai" else "claude-sonnet-4-5",
                              base_url=base_url, api_key_env="PLANTED_EVAL_KEY")
        results = compare_models(cfg, str(tiny_student), result.adapter_dir, chat_dataset["eval"], eval_dir, teacher=teacher)
        requests = list(server.requests)

    assert json.loads((eval_dir / "results.json").read_text()) == results
    assert len(requests) == cfg.limit and all(r["auth_present"] for r in requests)
    assert "OPENAI_API_KEY" not in os.environ and "ANTHROPIC_API_KEY" not in os.environ  # restored after scoring
    for side in ("base", "tuned", "teacher"):
        rows = [json.loads(line) for line in (eval_dir / f"{side}.predictions.jsonl").read_text().splitlines()]
        assert len(rows) == results[side]["n"] == cfg.limit
        assert [r["id"] for r in rows] == [item["id"] for item in items]
        for metric, value in recompute(rows).items():
            assert results[side][metric] == pytest.approx(value, abs=1e-12) if value is not None else results[side][metric] is None
        assert sum(g["n"] for g in results[side]["per_category"].values()) == cfg.limit
        assert sum(g["n"] for g in results[side]["per_difficulty"].values()) == cfg.limit
    # the teacher's scores follow from which answers were corrupted, whatever the metric code says
    teacher_rows = {r["id"]: r for r in map(json.loads, (eval_dir / "teacher.predictions.jsonl").read_text().splitlines())}
    assert results["teacher"]["exact_match"] == pytest.approx(1 - len(corrupt) / cfg.limit)
    answerable = [i for i in items if i["answerable"]]
    assert results["teacher"]["numeric_match"] == pytest.approx(sum(i["id"] not in corrupt for i in answerable) / len(answerable))
    refused = [i for i in items if not i["answerable"]]
    if refused:
        assert results["teacher"]["correctly_refused"] == pytest.approx(sum(i["id"] not in corrupt for i in refused) / len(refused))
    assert all(teacher_rows[i["id"]]["prediction"] == i["messages"][-1]["content"] for i in items if i["id"] not in corrupt)
    assert results["delta"]["token_f1"] == pytest.approx(results["tuned"]["token_f1"] - results["base"]["token_f1"])
    # what lm-eval fed the students is the training chat format, string and tokens
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    for side in ("base", "tuned"):
        for line, item in zip((eval_dir / f"{side}.predictions.jsonl").read_text().splitlines(), items):
            prompt, messages = json.loads(line)["prompt"], item["messages"]
            assert prompt == tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
            trained_ids = tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"]
            assert trained_ids[: len(tokenizer(prompt)["input_ids"])] == tokenizer(prompt)["input_ids"]
    # the key went to the server in a header, and nowhere else
    for path in eval_dir.rglob("*"):
        if path.is_file():
            assert PLANTED_KEY not in path.read_text(errors="ignore"), path
    assert PLANTED_KEY not in caplog.text


def test_a_teacher_without_its_key_is_a_config_error(tmp_path, task_dir, monkeypatch):
    from tasks.evaluate import run_lm_eval

    monkeypatch.delenv("MISSING_TEACHER_KEY", raising=False)
    teacher = TeacherSpec(name="t", kind="openai", model="gpt-4o", base_url="http://127.0.0.1:9/v1", api_key_env="MISSING_TEACHER_KEY")
    with pytest.raises(ConfigError, match="MISSING_TEACHER_KEY"):
        run_lm_eval(EvaluateConfig(limit=1), teacher, None, task_dir, "tidewright_ais", tmp_path / "teacher.json")


def _results_for_cost(seconds: float, n: int) -> dict:
    return {"tuned": {"seconds": seconds, "n": n}}


def test_cost_per_thousand_queries_from_the_ledger(tmp_path, tiny_student):
    prices = TeacherConfig().price_table()
    ledger = [
        {"outcome": "ok", "cost_usd": 0.01, "input_tokens": 900, "output_tokens": 100, "model": "gpt-4o"},
        {"outcome": "ok", "cost_usd": 0.03, "input_tokens": 2900, "output_tokens": 100, "model": "gpt-4o"},
        {"outcome": "rate_limited", "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "model": "gpt-4o"},
    ]
    cfg = EvaluateConfig(student_price_per_hour=3.6)
    cost = cost_report(_results_for_cost(20.0, 10), tmp_path, str(tiny_student), ledger, prices, cfg, "cpu")
    assert cost["teacher_usd_per_1k"] == pytest.approx(20.0)  # mean of 0.01 and 0.03 per answered call
    assert cost["student_usd_per_1k"] == pytest.approx(2.0)  # 2 s per query at 0.001 USD/s
    assert cost["ratio"] == pytest.approx(10.0)
    assert "2 answered calls of gpt-4o" in cost["teacher_basis"]


def test_cost_without_api_calls_prices_the_reference_model_on_the_eval_prompts(tmp_path, tiny_student):
    prompts = ["a b c " * 30, "d e f " * 10]
    rows = [{"prompt": p, "answer": "12.4 knots"} for p in prompts]
    (tmp_path / "tuned.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    tokens_in = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts) / 2
    tokens_out = len(tokenizer("12.4 knots", add_special_tokens=False)["input_ids"])
    cfg = EvaluateConfig(student_price_per_hour=2.0)
    cost = cost_report(_results_for_cost(1.0, 2), tmp_path, str(tiny_student), [], TeacherConfig().price_table(), cfg, "cpu")
    assert cost["teacher_usd_per_1k"] == pytest.approx(1000 * (tokens_in * 2.5 + tokens_out * 10.0) / 1e6, rel=1e-5)
    assert "gpt-4o list prices" in cost["teacher_basis"]
    assert cost["ratio"] == pytest.approx(cost["teacher_usd_per_1k"] / cost["student_usd_per_1k"], abs=0.05)  # 1 decimal


def test_evaluate_task_wraps_compare_models():
    assert evaluate_task.name == "evaluate-lm-eval"
    assert evaluate_task.fn is compare_models

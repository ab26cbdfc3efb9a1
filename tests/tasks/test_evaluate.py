from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from transformers import AutoTokenizer

from tasks.config import EvaluateConfig
from tasks.errors import ConfigError
from tasks.evaluate import compare_base_and_tuned, evaluate_task, write_lm_eval_task
from tasks.train import read_conversations


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
    doc = {"answer": "Vessel 1 averaged 12.4 knots."}
    assert metrics.process_results(doc, [" Vessel 1 averaged 12.4 knots. "]) == {"exact_match": 1.0, "token_f1": 1.0}


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
    assert [m["metric"] for m in config["metric_list"]] == ["exact_match", "token_f1"]


def test_task_name_must_be_an_identifier(tmp_path, chat_dataset, tiny_student):
    with pytest.raises(ConfigError, match="task name"):
        write_lm_eval_task(chat_dataset["eval"], tmp_path, "bad name!", tokenizer_from=str(tiny_student))


@pytest.mark.slow
def test_lm_eval_scores_base_and_tuned_on_the_training_format(tmp_path, trained, tiny_student, chat_dataset):
    result, _ = trained
    cfg = EvaluateConfig(limit=6, max_gen_toks=16, batch_size=3)
    eval_dir = tmp_path / "eval"
    results = compare_base_and_tuned(cfg, str(tiny_student), result.adapter_dir, chat_dataset["eval"], eval_dir)

    assert json.loads((eval_dir / "results.json").read_text()) == results
    assert (results["task"], results["limit"]) == ("tidewright_ais", 6)
    for side in ("base", "tuned"):
        scores = results[side]
        assert scores["n"] == cfg.limit
        assert 0.0 <= scores["exact_match"] <= 1.0 and 0.0 <= scores["token_f1"] <= 1.0
        assert sum(group["n"] for group in scores["per_category"].values()) == cfg.limit
        assert set(scores["per_category"]) == {"movement", "port_activity", "anomalies"}
        assert json.loads((eval_dir / f"{side}.json").read_text()) == scores
    for metric in ("exact_match", "token_f1"):
        assert results["delta"][metric] == pytest.approx(results["tuned"][metric] - results["base"][metric])

    # What lm-eval actually fed the model is the training chat format, string and tokens.
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    conversations = read_conversations(chat_dataset["eval"])
    predictions = [json.loads(line) for line in (eval_dir / "tuned.predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == cfg.limit
    for prediction, conversation in zip(predictions, conversations):
        messages = conversation["messages"]
        expected = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        assert prediction["prompt"] == expected
        trained_ids = tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"]
        prompt_ids = tokenizer(prediction["prompt"])["input_ids"]
        assert trained_ids[: len(prompt_ids)] == prompt_ids
        assert prediction["answer"] == messages[-1]["content"]
        assert "<|im_end|>" not in prediction["prediction"]


def test_evaluate_task_wraps_compare_base_and_tuned():
    assert evaluate_task.name == "evaluate-lm-eval"
    assert evaluate_task.fn is compare_base_and_tuned

from __future__ import annotations

import json
import logging
import math
import shutil

import pytest
import torch
from transformers import AutoTokenizer

from tasks.config import TrainConfig
from tasks.errors import ConfigError, InputError
from tasks.train import build_trainer, read_conversations, train_lora, train_task
from tests.tasks.conftest import make_ais_examples, write_jsonl

pytestmark = pytest.mark.slow

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_student, chat_dataset, small_train_config):
    trainer, method = build_trainer(
        small_train_config, str(tiny_student), chat_dataset["train"], None, tmp_path_factory.mktemp("trainer")
    )
    assert method == "lora"  # no CUDA on the test machines
    return trainer


def test_labels_mask_everything_but_the_assistant_answer(trainer, tiny_student, chat_dataset):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    conversations = read_conversations(chat_dataset["train"])
    assert len(trainer.train_dataset) == len(conversations)  # nothing lost to max_length
    for row, conversation in zip(trainer.train_dataset, conversations):
        messages = conversation["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)
        prompt_ids = prompt["input_ids"]
        # The trained sequence is the deployment prompt followed by the answer.
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids
        assert set(row["labels"][: len(prompt_ids)]) == {-100}
        trained_on = [label for label in row["labels"] if label != -100]
        assert tokenizer.decode(trained_on) == messages[-1]["content"] + "<|im_end|>"


def test_a_collated_batch_keeps_the_mask(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == -100).all()
    assert ((batch["labels"] == -100).sum(dim=1) > 0).all()


def test_training_moves_lora_weights_and_leaves_base_weights(trainer):
    lora_names = {name for name, _ in trainer.model.named_parameters() if "lora_" in name}
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora_names} == PROJECTIONS
    assert all(param.requires_grad == (name in lora_names) for name, param in trainer.model.named_parameters())
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    for name, param in before.items():
        if name in lora_names:
            assert not torch.equal(param, after[name]), f"{name} did not train"
        else:
            assert torch.equal(param, after[name]), f"frozen {name} changed"


def test_train_lora_writes_an_adapter_and_reports_the_run(trained, small_train_config):
    result, out_dir = trained
    assert result.adapter_dir == out_dir / "adapter"
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert {module.rsplit(".", 1)[-1] for module in adapter_config["target_modules"]} == PROJECTIONS
    assert adapter_config["r"] == small_train_config.lora_r
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.adapter_dir / "tokenizer.json").is_file()
    assert result.steps == small_train_config.max_steps
    assert math.isfinite(result.train_loss) and result.eval_loss is not None and math.isfinite(result.eval_loss)
    assert (result.method, result.device, result.examples) == ("lora", "cpu", 48)
    assert (out_dir / f"checkpoint-{small_train_config.max_steps}").is_dir()


def test_trained_adapter_loads_on_the_unchanged_base(trained, tiny_student):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = trained
    base_weights = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tiny_student).state_dict().items()}
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_student), result.adapter_dir)
    lora_b = [param for name, param in tuned.named_parameters() if "lora_B" in name]
    assert lora_b and any(param.abs().sum() > 0 for param in lora_b)  # B starts at zero: it moved
    merged = tuned.merge_and_unload().state_dict()
    assert torch.equal(base_weights["model.embed_tokens.weight"], merged["model.embed_tokens.weight"])
    assert not torch.equal(
        base_weights["model.layers.0.self_attn.q_proj.weight"], merged["model.layers.0.self_attn.q_proj.weight"]
    )


def test_a_second_call_resumes_from_the_last_checkpoint(
    trained, small_train_config, tmp_path, tiny_student, chat_dataset, caplog
):
    first, first_dir = trained
    out_dir = tmp_path / "train"
    shutil.copytree(first_dir, out_dir)
    longer = small_train_config.model_copy(update={"max_steps": first.steps + 2})
    with caplog.at_level(logging.INFO, logger="tasks.train"):
        result = train_lora(longer, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], out_dir)
    assert f"resuming from {out_dir / f'checkpoint-{first.steps}'}" in caplog.text
    assert result.steps == first.steps + 2
    state = json.loads((out_dir / f"checkpoint-{result.steps}" / "trainer_state.json").read_text())
    first_state = json.loads((first_dir / f"checkpoint-{first.steps}" / "trainer_state.json").read_text())
    # The history of the first run is carried over verbatim (a fresh run with a longer schedule
    # would log a different loss at the last shared step), then the run goes on.
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    first_logged = [entry for entry in first_state["log_history"] if "loss" in entry]
    assert logged[: len(first_logged)] == first_logged
    assert logged[-1]["step"] == result.steps


def test_bad_training_files_raise_input_errors(tmp_path, tiny_student):
    cfg = TrainConfig(max_steps=1)
    with pytest.raises(InputError, match="does not exist"):
        train_lora(cfg, str(tiny_student), tmp_path / "missing.jsonl", tmp_path / "eval.jsonl", tmp_path / "out")
    example = make_ais_examples(1)[0]
    example["messages"] = example["messages"][:-1]
    no_answer = write_jsonl(tmp_path / "no_answer.jsonl", [example])
    with pytest.raises(InputError, match="no_answer.jsonl:1: the last turn must be the assistant"):
        train_lora(cfg, str(tiny_student), no_answer, no_answer, tmp_path / "out")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(InputError, match="holds no examples"):
        train_lora(cfg, str(tiny_student), empty, empty, tmp_path / "out")


def test_train_task_wraps_train_lora():
    assert train_task.name == "train-lora"
    assert train_task.fn is train_lora


def test_a_finished_run_is_restored_not_trained_further(
    trained, small_train_config, tmp_path, tiny_student, chat_dataset
):
    from peft.utils import load_peft_weights

    first, first_dir = trained
    out_dir = tmp_path / "train"
    shutil.copytree(first_dir, out_dir)
    shutil.rmtree(out_dir / "adapter")
    again = train_lora(small_train_config, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], out_dir)
    assert again.steps == first.steps
    assert not (out_dir / f"checkpoint-{first.steps + 1}").exists()
    assert again.train_loss == first.train_loss and again.eval_loss == pytest.approx(first.eval_loss)
    restored, original = load_peft_weights(str(again.adapter_dir)), load_peft_weights(str(first.adapter_dir))
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[name], original[name]) for name in original)


def test_a_max_length_that_cuts_every_answer_is_a_config_error(tmp_path, tiny_student, chat_dataset):
    with pytest.raises(ConfigError, match="train.max_length=64"):
        build_trainer(TrainConfig(max_length=64), str(tiny_student), chat_dataset["train"], None, tmp_path)

"""Fine-tune the student on the chat dataset with LoRA (QLoRA on CUDA), resumable from checkpoints.

The dataset stays conversational (`messages` only), so TRL renders every example with the
tokenizer's own chat template, exactly as the model will be prompted at deployment, and the loss
covers the assistant turns only (`{% generation %}` spans of the template).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import TrainConfig
from tasks.errors import ConfigError, InputError
from tasks.student import hub_offline, is_local_model

log = logging.getLogger(__name__)

# PEFT's "all-linear": every linear layer of the blocks, i.e. the attention and MLP projections
# (q/k/v/o, gate/up/down in Qwen2 and Llama), whatever a model calls them; the output head stays frozen.
LORA_TARGET_MODULES = "all-linear"
# A crashed run loses at most this many steps; a checkpoint is also written at the last step.
CHECKPOINT_EVERY_STEPS = 25
ADAPTER_DIRNAME = "adapter"


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    eval_loss: float | None
    device: str
    method: str
    seconds: float
    examples: int


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """The `messages` of every example in a dataset JSONL, checked to end with an assistant answer."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; run the split stage first or pass an existing JSONL")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
        messages = example.get("messages") if isinstance(example, dict) else None
        if not messages or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages):
            raise InputError(f"{path}:{lineno} has no `messages` list of {{role, content}} turns")
        if messages[-1]["role"] != "assistant":
            raise InputError(
                f"{path}:{lineno}: the last turn must be the assistant's answer, got {messages[-1]['role']!r}"
            )
        # Only role and content go to the template; provenance keys stay in the JSONL.
        rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages]})
    return rows


def _conversation_dataset(path: Path):
    from datasets import Dataset

    rows = read_conversations(path)
    return Dataset.from_list(rows) if rows else None


def _load_model(base_model: str, cuda: bool):
    import torch
    from transformers import AutoModelForCausalLM

    if not cuda:
        return AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        base_model, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": 0}
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)


def build_trainer(cfg: TrainConfig, base_model: str, train_jsonl: Path, eval_jsonl: Path | None, out_dir: Path):
    """The SFTTrainer that `train_lora` runs, with its datasets tokenized and labelled.

    Returns (trainer, method). Exposed so tests and notebooks can inspect the exact tensors the
    model is trained on (`trainer.train_dataset["labels"]` is -100 outside assistant turns).
    """
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LossToLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.info("step %d/%d: loss %.4f", state.global_step, state.max_steps, logs["loss"])

    cuda = torch.cuda.is_available()
    method = "qlora-nf4" if cuda else "lora"
    if not cuda:
        log.warning("QLoRA needs CUDA (bitsandbytes 4-bit kernels are CUDA-only); training plain LoRA in fp32 on CPU")

    train_dataset = _conversation_dataset(train_jsonl)
    if train_dataset is None:
        raise InputError(f"{train_jsonl} holds no examples; the training split is empty")
    eval_dataset = _conversation_dataset(eval_jsonl) if eval_jsonl is not None else None

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.chat_template is None:
        raise ConfigError(
            f"student.base_model {base_model} has no chat template; use an instruct/chat model so that "
            "training matches deployment"
        )

    args = SFTConfig(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_length=cfg.max_length,
        seed=cfg.seed,
        assistant_only_loss=True,
        save_strategy="steps",
        save_steps=CHECKPOINT_EVERY_STEPS,
        save_total_limit=2,
        eval_strategy="no",
        logging_steps=max(1, min(10, cfg.max_steps // 10)),
        report_to=[],
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=cuda,
        # Recomputing activations only pays off when memory is short (a quantized 7B on a GPU).
        activation_checkpointing=cuda,
        # Batches of similar length: less padding, which on CPU is most of the wasted time.
        train_sampling_strategy="group_by_length",
        push_to_hub=False,
    )
    peft_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=LORA_TARGET_MODULES,
        task_type="CAUSAL_LM",
    )
    with quiet_hf_output():
        trainer = SFTTrainer(
            model=_load_model(base_model, cuda),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    # PrinterCallback prints every log dict to stdout; progress goes to this module's logger instead.
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LossToLogger())
    dropped = len(train_dataset) - len(trainer.train_dataset)
    if dropped == len(train_dataset):
        raise ConfigError(
            f"no training example has an answer token within train.max_length={cfg.max_length}; "
            "raise train.max_length or shorten the context (generate.max_context_records)"
        )
    if dropped:
        log.warning(
            "%d of %d training examples have no answer token within max_length=%d and were dropped; "
            "raise train.max_length or shorten the context",
            dropped,
            len(train_dataset),
            cfg.max_length,
        )
    return trainer, method


def _restore_if_finished(trainer, checkpoint: Path, max_steps: int) -> bool:
    """Load a checkpoint that already reached max_steps into the trainer instead of training.

    transformers 5.23 runs one extra optimizer step when asked to resume a run that is already
    complete, so a finished run (a retried or repeated flow) is restored here, not resumed.
    """
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    if state.global_step < max_steps:
        return False
    set_peft_model_state_dict(trainer.model, load_peft_weights(str(checkpoint)))
    trainer.state = state
    return True


@contextlib.contextmanager
def quiet_hf_output():
    """No progress bars from datasets/transformers and no v6 deprecation notices while inside."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_bars, transformers_bars = not datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # TRL 1.16 and PEFT still call the transformers 5.x names that 6.0 removes.
            warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning)
            yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            hf_logging.enable_progress_bar()


def train_lora(cfg: TrainConfig, base_model: str, train_jsonl: Path, eval_jsonl: Path, out_dir: Path) -> TrainResult:
    """Fine-tune `base_model` with LoRA on train_jsonl; adapter and tokenizer go to out_dir/adapter.

    Checkpoints go to out_dir/checkpoint-<step>; a call that finds one resumes from the latest,
    so a crashed or interrupted run continues where it stopped, and a call with a larger
    max_steps continues training. train_loss is the mean loss of the last logging window.
    """
    from transformers.trainer_utils import get_last_checkpoint

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    offline = hub_offline() if is_local_model(base_model) else contextlib.nullcontext()
    with offline, quiet_hf_output():
        trainer, method = build_trainer(cfg, base_model, train_jsonl, eval_jsonl, out_dir)
        checkpoint = get_last_checkpoint(str(out_dir))
        if checkpoint and _restore_if_finished(trainer, Path(checkpoint), cfg.max_steps):
            log.info("%s already holds %d steps; not training further", checkpoint, trainer.state.global_step)
        else:
            if checkpoint:
                log.info("resuming from %s", checkpoint)
            trainer.train(resume_from_checkpoint=checkpoint)
        eval_loss = trainer.evaluate()["eval_loss"] if trainer.eval_dataset is not None else None
        adapter_dir = out_dir / ADAPTER_DIRNAME
        trainer.model.save_pretrained(adapter_dir)
        trainer.processing_class.save_pretrained(adapter_dir)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    train_loss = float(losses[-1]) if losses else math.nan
    result = TrainResult(
        adapter_dir=adapter_dir,
        steps=trainer.state.global_step,
        train_loss=train_loss,
        eval_loss=float(eval_loss) if eval_loss is not None else None,
        device=str(trainer.args.device),
        method=method,
        seconds=round(time.perf_counter() - started, 2),
        examples=len(trainer.train_dataset),
    )
    log.info(
        "%s: %d steps on %d examples in %.1f s, train loss %.3f, eval loss %s",
        method,
        result.steps,
        result.examples,
        result.seconds,
        result.train_loss,
        "n/a" if result.eval_loss is None else f"{result.eval_loss:.3f}",
    )
    return result


train_task = task(name="train-lora")(train_lora)

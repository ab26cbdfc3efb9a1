"""Fixtures for the student / train / evaluate stages: a synthetic chat dataset of the shape the
split stage writes, a tiny student built from it, and one short LoRA run shared by the tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SYSTEM = (
    "You are a maritime AIS analyst. Answer only from the AIS records given; "
    "say so when they do not contain the answer."
)
NAMES = ["OCEAN TRADER", "NORTHERN STAR", "BLUE HERON", "CAPE MAY", "SEA SPIRIT", "PACIFIC DAWN"]
STATUSES = ["under way using engine", "moored", "at anchor"]


def _track(rnd: random.Random, rows: int, moored: bool) -> tuple[list[str], list[float]]:
    lat, lon = 40.4 + rnd.random() / 2, -74.0 + rnd.random() / 2
    lines, speeds = ["time|lat|lon|sog|cog|status"], []
    for i in range(rows):
        sog = 0.0 if moored else round(rnd.uniform(8.0, 15.0), 1)
        speeds.append(sog)
        lat, lon = lat + sog / 6000, lon + sog / 5000
        status = "moored" if moored else rnd.choice(STATUSES[:1] * 5 + STATUSES[2:])
        lines.append(f"06:{i * 5:02d}:00|{lat:.5f}|{lon:.5f}|{sog:.1f}|{rnd.uniform(0, 359.9):.1f}|{status}")
    return lines, speeds


def make_ais_examples(n: int, seed: int = 0, rows: tuple[int, int] = (6, 10)) -> list[dict]:
    """n chat examples like the split stage's: AIS table + question in the user turn, a one-sentence answer."""
    rnd = random.Random(seed)
    examples = []
    for i in range(n):
        mmsi, name = rnd.randint(201000000, 775999999), rnd.choice(NAMES)
        category = ["movement", "port_activity", "anomalies"][i % 3]
        answerable = i % 10 != 9
        lines, speeds = _track(rnd, rnd.randint(*rows), moored=category == "port_activity")
        asked = mmsi if answerable else rnd.randint(201000000, 775999999)
        # the values the answer must state, as the catalogue's grounding lists them
        grounding = [{"name": "mmsi", "kind": "id", "value": mmsi, "required": True}]
        if category == "movement":
            question = f"What was the average speed of vessel {asked} between 06:00 and 07:00 UTC?"
            answer = (
                f"Vessel {mmsi} ({name}) averaged {sum(speeds) / len(speeds):.1f} knots between 06:00 and 07:00 UTC, "
                f"with a maximum of {max(speeds):.1f} knots."
            )
            grounding += [{"name": "mean_sog", "kind": "speed_kn", "value": sum(speeds) / len(speeds), "required": True},
                          {"name": "max_sog", "kind": "speed_kn", "value": max(speeds), "required": True}]
        elif category == "port_activity":
            question = f"Was vessel {asked} moored in port between 06:00 and 07:00 UTC?"
            answer = f"Yes. Vessel {mmsi} ({name}) was moored at Port Newark for the whole window, at 0.0 knots."
            grounding += [{"name": "sog", "kind": "speed_kn", "value": 0.0, "required": True}]
        else:
            question = f"Did vessel {asked} have an AIS gap longer than 10 minutes between 06:00 and 07:00 UTC?"
            answer = f"No. Vessel {mmsi} ({name}) reported every 5 minutes; the longest gap was 5 minutes."
            grounding += [{"name": "longest_gap", "kind": "minutes", "value": 5.0, "required": True}]
        if not answerable:
            answer = f"The records provided contain no reports from vessel {asked}, so the data is insufficient to answer."
            grounding = [{"name": "asked_mmsi", "kind": "id", "value": asked, "required": True}]
        records = "\n".join(lines)
        user = f"AIS records for vessel {mmsi} ({name}), 2024-01-15 UTC:\n{records}\n\nQuestion: {question}"
        examples.append(
            {
                "id": f"ais-{seed}-{i:04d}",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer},
                ],
                "category": category,
                "difficulty": ["easy", "medium", "hard"][i % 3],
                "answerable": answerable,
                "grounding": grounding,
                "source_hash": f"{rnd.getrandbits(64):016x}",
            }
        )
    return examples


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def corpus_of(examples: list[dict]) -> list[str]:
    return [message["content"] for example in examples for message in example["messages"]]


@pytest.fixture(scope="session")
def chat_dataset(tmp_path_factory) -> dict[str, Path]:
    """60 examples: train.jsonl (48) and eval.jsonl (12)."""
    examples = make_ais_examples(60)
    root = tmp_path_factory.mktemp("chat_dataset")
    return {
        "train": write_jsonl(root / "train.jsonl", examples[:48]),
        "eval": write_jsonl(root / "eval.jsonl", examples[48:]),
    }


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory, chat_dataset) -> Path:
    from tasks.config import StudentConfig
    from tasks.student import build_tiny_student

    train = [json.loads(line) for line in chat_dataset["train"].read_text().splitlines()]
    return build_tiny_student(StudentConfig(), corpus_of(train), tmp_path_factory.mktemp("student"), seed=0)


@pytest.fixture(scope="session")
def small_train_config():
    from tasks.config import TrainConfig

    return TrainConfig(max_steps=3, batch_size=4, max_length=640, learning_rate=5e-3)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_student, chat_dataset, small_train_config):
    """One short LoRA run (3 steps) on the tiny student: (TrainResult, out_dir)."""
    from tasks.train import train_lora

    out_dir = tmp_path_factory.mktemp("train")
    result = train_lora(small_train_config, str(tiny_student), chat_dataset["train"], chat_dataset["eval"], out_dir)
    return result, out_dir


@pytest.fixture(scope="session")
def sim30(tmp_path_factory):
    """One 30-vessel, 24-hour simulation (seed 5) staged and turned into facts for every catalogue
    test module: (staged, facts, root). Read it; write next to it only under new names."""
    from tests.tasks.factories import small_pipeline

    root = tmp_path_factory.mktemp("sim30")
    staged, facts = small_pipeline(root, seed=5, vessels=30, hours=24)
    return staged, facts, root

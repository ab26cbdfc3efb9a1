"""Dedup against paraphrases and the published version, dataset versions that carry splits
forward, the time-window split, and balancing caps: real MiniLM embeddings, real FAISS, real files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tasks.artifacts import read_jsonl, write_jsonl
from tasks.balance import balance_examples
from tasks.config import BalanceConfig, DedupConfig, SplitConfig
from tasks.dedup import dedup_examples, embed_texts
from tasks.publish import publish_dataset
from tasks.split import assign_splits
from tasks.versions import dedup_reference, latest_version
from tests.tasks.factories import example, movement_seed, port_seed

MEAN_Q = "What was the mean speed of vessel {m} (SEA STAR) between 06:00 and 07:00 UTC?"
MEAN_A = "Averaging the 25 speed reports, vessel {m} (SEA STAR) kept a mean speed over ground of 12.3 knots between 06:00 and 07:00 UTC."
# the same question and answer in other words (what a second teacher, or a copy-edit, writes)
PARA_Q = "Between 06:00 and 07:00 UTC, what average speed did SEA STAR (MMSI {m}) keep?"
PARA_A = "The 25 speed reports of vessel {m} (SEA STAR) average to 12.3 knots over ground between 06:00 and 07:00 UTC."


def _worded(ex: dict, question: str, answer: str, id_: str, mmsi: int | None = None) -> dict:
    ex = json.loads(json.dumps(ex))
    ex.update(id=id_, question=question, answer=answer)
    ex["messages"][1]["content"] = ex["messages"][1]["content"].rsplit("Question:", 1)[0] + "Question: " + question
    ex["messages"][-1]["content"] = answer
    if mmsi is not None:
        ex["mmsi"], ex["split_key"] = mmsi, str(mmsi)
    return ex


def _sides(n: int = 40) -> tuple[int, int]:
    """One MMSI that the split puts in train and one it puts in eval."""
    mmsis = [366000100 + i for i in range(n)]
    sides = assign_splits([{"mmsi": m} for m in mmsis], SplitConfig())
    return next(m for m in mmsis if sides[str(m)] == "train"), next(m for m in mmsis if sides[str(m)] == "eval")


def _fleet(n: int, hour: int = 6) -> list[dict]:
    rows = [example(movement_seed(mmsi=366000000 + i, hour=hour, mean=10 + i / 7)) for i in range(n)]
    rows += [example(port_seed("arrival", mmsi=366000500 + i)) for i in range(n)]
    return rows


def test_a_paraphrase_across_splits_is_caught_and_same_template_questions_about_other_facts_are_kept(tmp_path):
    train_m, eval_m = _sides()
    original = example(movement_seed(mmsi=train_m))
    original = _worded(original, MEAN_Q.format(m=train_m), MEAN_A.format(m=train_m), "a-original")
    # a planted paraphrase filed under a vessel that the split sends to eval
    paraphrase = _worded(original, PARA_Q.format(m=train_m), PARA_A.format(m=train_m), "b-paraphrase", mmsi=eval_m)
    # the same template about another vessel and hour: a different fact, not a copy
    other = example(movement_seed(mmsi=eval_m, hour=9, mean=7.81))
    other = _worded(other, MEAN_Q.format(m=eval_m).replace("06:00 and 07:00", "09:00 and 10:00").replace("SEA STAR", "NORDIC SPIRIT"),
                    MEAN_A.format(m=eval_m).replace("12.3", "7.8").replace("06:00 and 07:00", "09:00 and 10:00")
                    .replace("SEA STAR", "NORDIC SPIRIT"), "c-other")
    write_jsonl([original, paraphrase, other], tmp_path / "in.jsonl")
    stats = dedup_examples(tmp_path / "in.jsonl", DedupConfig(), tmp_path / "out.jsonl", tmp_path / "q.parquet")
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == ["a-original", "c-other"]
    q = pd.read_parquet(tmp_path / "q.parquet")
    assert q.reason.tolist() == ["near_duplicate"] and "to a-original" in json.loads(q.payload[0])["rejection_detail"]
    assert stats["near_duplicates"] == 1

    # and if a paraphrase reaches publishing by another road, the split check takes it out of eval
    write_jsonl([original, paraphrase, other], tmp_path / "undeduped.jsonl")
    pub = publish_dataset(tmp_path / "undeduped.jsonl", [], SplitConfig(), tmp_path / "dataset", dedup_cfg=DedupConfig())
    evals = [e["id"] for e in read_jsonl(tmp_path / "dataset" / "eval.jsonl")]
    assert "b-paraphrase" not in evals and "c-other" in evals and pub["leak_removed_new"] == 1
    manifest = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    assert manifest["leak_check"]["near_duplicate_pairs"] == 1
    assert manifest["quarantine"] == {"split/split_near_duplicate": 1}


def test_near_copies_of_the_published_version_and_of_review_rejections_are_not_added_again(tmp_path):
    m = 366000001
    published = _worded(example(movement_seed(mmsi=m)), MEAN_Q.format(m=m), MEAN_A.format(m=m), "p1")
    rejected = _worded(example(port_seed("arrival")), "When did OCEAN 7 arrive at Long Beach?", "It arrived at 07:42 UTC.", "r1")
    reference = [{"id": e["id"], "question": e["question"], "answer": e["answer"], "grounding": e["grounding"]} for e in (published, rejected)]
    reference[1]["origin"] = "rejected in review"
    new = [
        _worded(published, PARA_Q.format(m=m), PARA_A.format(m=m), "n1-paraphrase"),
        _worded(rejected, rejected["question"], rejected["answer"], "n2-copy-of-rejected"),
        {**_worded(published, "How fast did SEA STAR go on average?", "12.3 knots on average.", "p1")},  # same seed again
        _worded(example(movement_seed(mmsi=366000002, hour=11, mean=8.54)),
                MEAN_Q.format(m=366000002).replace("06:00 and 07:00", "11:00 and 12:00").replace("SEA STAR", "HARBOR QUEEN"),
                MEAN_A.format(m=366000002).replace("12.3", "8.5").replace("06:00 and 07:00", "11:00 and 12:00")
                .replace("SEA STAR", "HARBOR QUEEN"), "n4-new"),
    ]
    write_jsonl(new, tmp_path / "in.jsonl")
    stats = dedup_examples(tmp_path / "in.jsonl", DedupConfig(), tmp_path / "out.jsonl", tmp_path / "q.parquet", reference,
                           tmp_path / "emb.sqlite", tmp_path / "kept.npy")
    assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == ["n4-new"]
    q = pd.read_parquet(tmp_path / "q.parquet").set_index("record_id")
    detail = {i: json.loads(p)["rejection_detail"] for i, p in q.payload.items()}
    assert q.reason.to_dict() == {"p1": "published_duplicate", "n2-copy-of-rejected": "published_duplicate",
                                  "n1-paraphrase": "near_published"}
    assert "rejected in review r1" in detail["n2-copy-of-rejected"] and "published p1" in detail["n1-paraphrase"]
    assert stats["published_duplicates"] == 3 and np.load(tmp_path / "kept.npy").shape == (1, 384)
    # the embedding cache answers the second time: nothing is embedded again
    again = dedup_examples(tmp_path / "in.jsonl", DedupConfig(), tmp_path / "out2.jsonl", tmp_path / "q2.parquet", reference,
                           tmp_path / "emb.sqlite")
    assert again["embedded"] == 0 and again["embedded_from_cache"] == stats["embedded"] > 0
    texts = [f"{e['question']}\n{e['answer']}" for e in (new[0], new[3])]  # the two that were embedded
    cold, _ = embed_texts(texts, DedupConfig())
    warm, computed = embed_texts(texts, DedupConfig(), tmp_path / "emb.sqlite")
    assert computed == 0 and np.allclose(cold, warm, atol=1e-6)


def test_a_new_version_carries_the_last_one_with_its_splits_and_finds_it_by_line(tmp_path):
    runs = tmp_path / "runs"
    first = _fleet(8)
    write_jsonl(first, tmp_path / "v1.jsonl")
    publish_dataset(tmp_path / "v1.jsonl", [], SplitConfig(eval_share=0.3), runs / "r1" / "dataset",
                    version={"lineage": "ais", "run_id": "r1"})
    (runs / "latest").symlink_to("r1")
    # another line in the same folder is not this line's history
    write_jsonl(_fleet(3, hour=3), tmp_path / "other.jsonl")
    publish_dataset(tmp_path / "other.jsonl", [], SplitConfig(), runs / "x1" / "dataset", version={"lineage": "docs", "run_id": "x1"})
    previous = latest_version(runs, "ais", exclude=runs / "r2")
    assert previous == runs / "r1" / "dataset"
    assert len(dedup_reference(previous)) == len(first)

    second = _fleet(12, hour=14)[8:12] + _fleet(12, hour=14)[20:]  # four new vessels of each kind
    write_jsonl(second, tmp_path / "v2.jsonl")
    stats = publish_dataset(tmp_path / "v2.jsonl", [], SplitConfig(eval_share=0.3), runs / "r2" / "dataset", previous,
                            {"lineage": "ais", "run_id": "r2"})
    assert stats["carried"] == len(first) and stats["added"] == len(second) and stats["published"] == len(first) + len(second)
    v1 = pd.read_parquet(runs / "r1" / "dataset" / "examples.parquet").set_index("id")
    v2 = pd.read_parquet(runs / "r2" / "dataset" / "examples.parquet").set_index("id")
    assert (v2.loc[v1.index, "split"] == v1["split"]).all()
    assert set(v2.loc[[e["id"] for e in second], "version_added"]) == {"r2"}
    manifest = json.loads((runs / "r2" / "dataset" / "manifest.json").read_text())
    assert manifest["version"]["parent"] == "r1" and manifest["version"]["carried"] == len(first)
    assert latest_version(runs, "ais") == runs / "r2" / "dataset"


def test_time_cut_keeps_eval_windows_after_train_windows(tmp_path):
    rows = [example(movement_seed(mmsi=366000000 + i, hour=h)) for i in range(12) for h in (4, 10, 16)]
    for n, r in enumerate(rows):
        r["id"] = f"t{n:03d}"
    write_jsonl(rows, tmp_path / "in.jsonl")
    cfg = SplitConfig(eval_share=0.3, time_cut="2024-01-15T10:00:00")
    stats = publish_dataset(tmp_path / "in.jsonl", [], cfg, tmp_path / "dataset")
    ex = pd.read_parquet(tmp_path / "dataset" / "examples.parquet")
    assert (pd.to_datetime(ex.loc[ex.split == "eval", "window_start"]) >= pd.Timestamp("2024-01-15T10:00")).all()
    assert (pd.to_datetime(ex.loc[ex.split == "train", "window_end"]) <= pd.Timestamp("2024-01-15T10:00")).all()
    q = pd.read_parquet(tmp_path / "dataset" / "quarantine.parquet")
    assert stats["held_out"] == len(q) > 0 and set(q.reason) == {"split_holdout"}
    assert len(ex) + len(q) == len(rows)
    assert not set(ex.loc[ex.split == "eval", "mmsi"]) & set(ex.loc[ex.split == "train", "mmsi"])


def test_caps_count_the_carried_examples_and_drop_the_most_repetitive_first(tmp_path):
    rows = _fleet(10)
    # three near-identical movement questions: the most repetitive go first when the cap bites
    write_jsonl(rows, tmp_path / "in.jsonl")
    vectors, _ = embed_texts([f"{e['question']}\n{e['answer']}" for e in rows], DedupConfig())
    np.save(tmp_path / "emb.npy", vectors)
    # the version this run builds on: 4 port arrivals (tanker, same stratum as the new ones)
    previous = [example(port_seed("arrival", mmsi=366900000 + i)) for i in range(4)]
    for i, r in enumerate(previous):
        r["id"] = f"prev{i}"
    write_jsonl(previous, tmp_path / "prev.jsonl")
    publish_dataset(tmp_path / "prev.jsonl", [], SplitConfig(), tmp_path / "prev" / "dataset")
    cfg = BalanceConfig(max_per_category={"movement": 6}, max_per_stratum=7)
    stats = balance_examples(tmp_path / "in.jsonl", cfg, tmp_path / "out.jsonl", tmp_path / "q.parquet", tmp_path / "emb.npy",
                             tmp_path / "prev" / "dataset")
    kept = read_jsonl(tmp_path / "out.jsonl")
    by_cat = pd.Series([e["category"] for e in kept]).value_counts().to_dict()
    # movement capped at 6; port arrivals share one stratum with the 4 carried ones: 7 - 4 = 3 room
    assert by_cat == {"movement": 6, "port_activity": 3}
    q = pd.read_parquet(tmp_path / "q.parquet")
    assert q.reason.value_counts().to_dict() == {"cap_category": 4, "cap_stratum": 7}
    assert stats["before"]["category"] == {"movement": 10, "port_activity": 14}
    assert stats["after"]["category"] == {"movement": 6, "port_activity": 7}
    # the movement examples left out are the ones closest to another example
    from tasks.dedup import nearest_cosine

    mv = [i for i, e in enumerate(rows) if e["category"] == "movement"]
    nn = nearest_cosine(vectors[mv])
    dropped = {rows[mv[i]]["id"] for i in np.argsort(-nn, kind="stable")[:4]}
    assert dropped == set(q.loc[q.reason == "cap_category", "record_id"])
    # no caps: everything passes, nothing is quarantined
    stats = balance_examples(tmp_path / "in.jsonl", BalanceConfig(), tmp_path / "o.jsonl", tmp_path / "q0.parquet")
    assert stats["kept"] == len(rows) and stats["dropped"] == 0

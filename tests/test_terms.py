"""Retrieval searches with the rarest words of the query, counted per run as seeds are collected."""

from __future__ import annotations

from checkpoints import terms
from checkpoints.registry import Registry
from teachgraph.seeds import Chunk


def chunk(n: int, text: str) -> Chunk:
    return Chunk(id=f"s{n}", source=f"doc{n}.txt", index=0, title=f"Doc {n}", text=text, kind="text")


def registry_with(tmp_path, texts: list[str], run_id: str = "r") -> Registry:
    registry = Registry(tmp_path / "runs.db")
    registry.create_run(run_id, "rag", {})
    registry.add_corpus(run_id, [chunk(i, t) for i, t in enumerate(texts)], limit=None,
                        assign=lambda seed_id, kind: ("rag", None, "t"), passage_chars=420)
    return registry


def test_words_are_counted_per_run_and_per_passage(tmp_path):
    registry = registry_with(tmp_path, ["common alpha", "common beta beta", "common gamma"])
    registry_with(tmp_path, ["common delta"], run_id="other")
    rows = dict(registry.db.execute("select term, passages from terms where run_id = 'r'").fetchall())
    assert rows == {"common": 3, "alpha": 1, "beta": 1, "gamma": 1}     # a passage counts a word once


def test_the_rarest_shared_words_are_searched_for(tmp_path):
    texts = ["zebra common shared apple"] + [f"common filler{i} shared" for i in range(6)] + ["apple pie common"]
    registry = registry_with(tmp_path, texts)
    picked = terms.rarest(registry.db, "r", "zebra apple shared common the", k=2)
    assert picked == ["apple", "shared"]       # zebra is only in one passage; "the" is a stopword
    hits = registry.search("r", "zebra apple shared common", exclude_seed="s0", limit=1)
    assert [h["seed_id"] for h in hits] == ["s7"]                       # the other apple document


def test_runs_collected_before_counting_fall_back_to_the_first_words(tmp_path):
    registry = registry_with(tmp_path, ["alpha beta", "beta gamma"])
    registry.db.execute("delete from terms")
    assert terms.rarest(registry.db, "r", "gamma beta alpha") == ["gamma", "beta", "alpha"]
    assert [h["seed_id"] for h in registry.search("r", "gamma", exclude_seed="s0", limit=2)] == ["s1"]

"""Retrieval searches with the rarest words of the query, counted per run as seeds are collected."""

from __future__ import annotations

import json

import pytest

from teachgraph import skills
from teachgraph.checkpoints import terms
from teachgraph.checkpoints.registry import Registry
from teachgraph.mix import Dealer
from teachgraph.seeds import Chunk, collect
from tests.conftest import SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript


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


@pytest.mark.slow
def test_a_collection_cut_short_then_resumed_gives_the_samples_of_an_uninterrupted_run(tmp_path):
    """A kill while seeds are collected leaves some seeds, passages and word counts stored; `graph
    resume` collects again. The counts must not add up twice (rarer-looking words pick other
    distractors): the resumed run's samples and counts are the uninterrupted run's, byte for byte."""
    class SeedWordsScript(RagScript):
        """An empty search query: retrieval searches with the seed's rarest words, as counted."""
        def reply(self, system: str, user: str) -> str:
            reply = super().reply(system, user)
            return json.dumps({**json.loads(reply), "search_query": ""}) if '"search_query"' in reply else reply

    def cut_short(items, after: int):
        for n, item in enumerate(items):
            if n == after:
                raise KeyboardInterrupt      # what Ctrl-C (or a kill) does mid-collection
            yield item

    def samples_and_terms(home):
        db = Registry(home / "runs.db").db
        samples = [json.loads(row["body"]) for row in db.query("select body from samples order by seq")]
        return samples, sorted(db.execute("select term, passages from terms").fetchall())

    run_id = "same-run"
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    with FakeOpenAI() as fake:
        args = ["--seeds", str(SAMPLE), "--rounds", "1", "--concurrency", "1", "--run-id", run_id,
                "--base-url", fake.base_url, "--model", "fake-model", "--structured", "json_object"]
        fake.responder = SeedWordsScript().http_responder
        result = run_cli("graph", "run", "rag", *args, home=clean)
        assert result.returncode == 0, result.stderr

        settings = Registry(clean / "runs.db").run(run_id)["settings"]
        settings["out"] = str(resumed / "runs" / run_id / "samples.jsonl")
        registry = Registry(resumed / "runs.db")
        registry.create_run(run_id, "rag", settings)
        with pytest.raises(KeyboardInterrupt):      # 9 of the 18 seeds stored, in batches of 3
            registry.add_corpus(run_id, cut_short(collect([SAMPLE]), 9), limit=None, batch=3,
                                assign=Dealer([skills.load("rag")]), passage_chars=420)
        assert registry.run(run_id)["status"] == "collecting" and registry.counts(run_id)["total"] == 9
        fake.responder = SeedWordsScript().http_responder
        result = run_cli("graph", "resume", run_id, home=resumed)
        assert result.returncode == 0, result.stderr
        assert "collecting them again" in result.stderr

    clean_samples, clean_terms = samples_and_terms(clean)
    resumed_samples, resumed_terms = samples_and_terms(resumed)
    assert len(clean_samples) >= 18
    differ = sum(a != b for a, b in zip(clean_samples, resumed_samples))
    assert len(resumed_samples) == len(clean_samples) and differ == 0, f"{differ} of {len(clean_samples)} differ"
    assert resumed_terms == clean_terms

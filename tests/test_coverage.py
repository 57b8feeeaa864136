"""Taxonomy coverage: task types are dealt evenly over the whole taxonomy, among the types that fit each
seed's transformation, across transformations and across a resume; `--target N` keeps running unused
seeds until every task type has N accepted samples or the seeds run out."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import teachgraph
from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.llm import LLM
from teachgraph.mix import Dealer
from teachgraph.runner import Home, Settings
from teachgraph.seeds import collect
from tests.flow_script import FlowScript, SchemaChatModel


def universal(skill: skills.Skill) -> set[str]:
    """The task types that fit every transformation."""
    return {t.name for t in skill.taxonomy if not t.transformations}


def spread(counts: Counter, names: set[str]) -> int:
    values = [counts.get(n, 0) for n in names]
    return max(values) - min(values)


def test_dealing_covers_the_taxonomy_across_transformations():
    rc = skills.load("reading_comprehension")
    deal = rc.assigner()
    dealt = [deal(f"seed{n}", "text") for n in range(13)]
    # the run from the issue: 13 seeds over several transformations used 4 of 43 types; now 13 distinct
    assert len({t for _, t in dealt}) == 13
    assert len({tr for tr, _ in dealt}) >= 4
    deal = rc.assigner()
    counts: Counter = Counter()
    for n in range(1, 431):
        transformation, task = deal(f"seed{n}", "text")
        assert rc.task_type(task).fits(transformation)
        # before choosing, the chosen type was among the least dealt of the types that fit the seed
        fitting = [t.name for t in rc.taxonomy if t.fits(transformation)]
        assert counts[task] == min(counts[name] for name in fitting)
        counts[task] += 1
        assert spread(counts, universal(rc)) <= 1, n
    assert set(counts) == {t.name for t in rc.taxonomy}
    # types routed to few transformations trail only by how rarely those come up: 9 to 11 of each here
    assert max(counts.values()) - min(counts.values()) <= 2


@pytest.mark.parametrize("name", ["text_modification", "text_classification", "data_to_text", "rag"])
def test_every_skill_deals_evenly(name):
    skill = skills.load(name)
    deal = skill.assigner()
    counts = Counter(deal(f"s{n}", "text")[1] for n in range(len(skill.taxonomy) * 4 + 3))
    assert spread(counts, universal(skill)) <= 1
    text = [t.name for t in skill.transformations_for("text")] or [None]
    assert set(counts) == {t.name for t in skill.taxonomy if any(t.fits(tr) for tr in text)}


# ---- in a run, with the fake model ----

def corpus_of(folder: Path, documents: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(documents):
        (folder / f"doc{n:02d}.md").write_text(
            f"# Station {n}\n\n" + f"Weather station {n} records rain on {100 + n} days a year; "
            f"its summers average {20 + n % 7} degrees and its winters {n % 5} degrees. " * 5)
    return folder


def fake_llm() -> LLM:
    return LLM(chat=SchemaChatModel(script=FlowScript()), model_name="fake", structured_mode="json_object")


def seed_types(registry: Registry, run_id: str) -> Counter:
    return Counter(row["task_type"] for row in registry.db.query(
        "select task_type from seeds where run_id = ? and coalesce(node, '') != 'target'", [run_id]))


def test_a_run_killed_while_collecting_deals_evenly_once_resumed(tmp_path):
    """A kill mid-collection leaves some seeds dealt; the resumed run collects again and its seeds, and
    the samples' task types, are spread as evenly as one uninterrupted collection's."""
    corpus = corpus_of(tmp_path / "corpus", 30)
    skill = skills.load("reading_comprehension")
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    settings = Settings(skill=skill.name, seeds=[str(corpus)], out=str(home.default_out("cut")), rounds=0,
                        concurrency=2, model="fake")
    registry.create_run("cut", skill.name, settings.to_json())

    def killed_after(items, n):
        for count, item in enumerate(items):
            if count == n:
                raise KeyboardInterrupt
            yield item
    with pytest.raises(KeyboardInterrupt):
        registry.add_corpus("cut", killed_after(collect([corpus]), 11), limit=None, assign=Dealer([skill]),
                            passage_chars=420, batch=4)
    assert registry.run("cut")["status"] == "collecting" and 0 < registry.counts("cut")["total"] < 30

    run = teachgraph.resume("cut", home=home.root, llm=fake_llm())
    assert run.counts["total"] == 30 and run.counts["pending"] == 0
    dealt = seed_types(run.registry, "cut")
    assert len(dealt) == 30                   # 30 seeds, 30 distinct types of 43
    by_sample = Counter(s["metadata"]["task_type"] for s in run.samples() if s["metadata"]["refinement_round"] == 0)
    accepted = Counter(r["task_type"] for r in run.registry.db.query(
        "select task_type from seeds where run_id = 'cut' and status = 'accepted'"))
    assert by_sample == accepted and sum(accepted.values()) > 0


# ---- --target N ----

def kept_by_type(run) -> Counter:
    return Counter(s["metadata"]["task_type"] for s in run.samples())


def test_target_runs_seeds_until_every_task_type_has_n_samples(tmp_path):
    """open_domain_qa has 12 task types; with no refinement each accepted seed writes one sample, so
    --target 2 needs 24 of the 30 seeds and leaves 6 unused, each with its reason. (No gates: a sample they
    dropped would take one more seed, and the count would depend on the fake's text.)"""
    corpus = corpus_of(tmp_path / "corpus", 30)
    run = teachgraph.run("open_domain_qa", [corpus], rounds=0, target=2, concurrency=4, home=tmp_path / "home",
                         run_id="tg", llm=fake_llm(), model="fake", gates=False)
    names = {t.name for t in skills.load("open_domain_qa").taxonomy}
    assert kept_by_type(run) == Counter({name: 2 for name in names})
    unused = [r for r in run.registry.failures("tg") if r["node"] == "target"]
    assert len(unused) == 6 and all("--target 2" in r["why"] for r in unused)
    assert run.counts["accepted"] == 24 and run.counts["pending"] == 0 and run.status == "complete"
    # the registry's task type of each seed is the one its sample has (seeds were dealt again as they started)
    for sample in run.samples():
        assert run.registry.seed("tg", sample["metadata"]["seed_id"])["task_type"] == sample["metadata"]["task_type"]
    report = teachgraph.report("tg", home=tmp_path / "home", semantic=False)
    assert report.short_of_target() == []
    from teachgraph import quality
    assert "every task type has 2 accepted samples" in quality.markdown(report)


def test_target_says_which_types_fell_short_when_the_seeds_run_out(tmp_path):
    corpus = corpus_of(tmp_path / "corpus", 9)
    run = teachgraph.run("open_domain_qa", [corpus], rounds=0, target=2, home=tmp_path / "home", run_id="few",
                         llm=fake_llm(), model="fake")
    kept = kept_by_type(run)
    assert sum(kept.values()) == 9 and max(kept.values()) == 1    # spread over 9 types, one each
    report = teachgraph.report("few", home=tmp_path / "home", semantic=False)
    short = report.short_of_target()
    assert len(short) == 12 and sorted(n for _, _, n in short) == [0, 0, 0] + [1] * 9
    from teachgraph import quality
    assert "12 task types fell short (the seeds ran out)" in quality.markdown(report)


def test_target_stays_even_across_an_interrupted_run_and_its_resume(tmp_path):
    """Stopped (as by Ctrl-C) in the middle of a model call, then resumed: every type still ends with
    exactly N, and the seeds cut off mid-graph keep the task type their checkpoint holds."""
    from teachgraph.api import _Stopper
    corpus = corpus_of(tmp_path / "corpus", 30)
    stopper = _Stopper()

    class StopAtCall(FlowScript):
        def reply(self, system, user, schema):
            if len(self.calls) == 20:     # a seed is inside a model call: its thread has a checkpoint
                stopper.stop()
            return super().reply(system, user, schema)
    llm = LLM(chat=SchemaChatModel(script=StopAtCall()), model_name="fake", structured_mode="json_object")
    with pytest.raises(teachgraph.RunInterrupted):
        teachgraph.run("open_domain_qa", [corpus], rounds=0, target=2, concurrency=3, home=tmp_path / "home",
                       run_id="cut", llm=llm, model="fake", _stopper=stopper, gates=False)   # exact counts
    first = teachgraph.open_run("cut", home=tmp_path / "home")
    assert 0 < first.counts["accepted"] < 24 and first.counts["pending"] > 0
    with sqlite3.connect(tmp_path / "home" / "checkpoints.db") as db:   # seeds cut off mid-graph: resumed as started
        assert db.execute("select count(distinct thread_id) from checkpoints").fetchone()[0] >= 1
    run = teachgraph.resume("cut", home=tmp_path / "home", llm=fake_llm())
    names = {t.name for t in skills.load("open_domain_qa").taxonomy}
    assert kept_by_type(run) == Counter({name: 2 for name in names})
    assert run.counts["accepted"] == 24 and run.counts["pending"] == 0
    for sample in run.samples():
        assert run.registry.seed("cut", sample["metadata"]["seed_id"])["task_type"] == sample["metadata"]["task_type"]


def test_target_counts_the_seeds_a_resumed_run_will_continue(tmp_path):
    """A seed cut off mid-graph holds its type in its checkpoint: a seed before it in the corpus's order,
    dealt first on resume, must count it, or their type ends with N + 1."""
    import asyncio
    from teachgraph.mix import Target
    from teachgraph.seeds import Chunk
    skill = skills.load("open_domain_qa")
    t = [task.name for task in skill.taxonomy]
    registry = Registry(tmp_path / "runs.db")
    registry.create_run("r", skill.name, Settings(skill=skill.name, seeds=[], out=str(tmp_path / "o.jsonl")).to_json())
    chunks = [Chunk(id=f"s{n}", source="x", index=n, title="x", text="text " * 50, kind="text") for n in range(3)]
    registry.add_corpus("r", chunks, limit=None, passage_chars=420,
                        assign=lambda seed_id, kind: (skill.name, skill.transformations[0].name, t[0]))
    seed1 = registry.seed("r", "s1")
    assert asyncio.run(Target(registry, "r", 1).deal(seed1, skill)) == t[0]       # unaware of s2: its own t0
    resumed = Target(registry, "r", 1, started={"s2", "gone"})                     # s2 holds t0, mid-graph
    assert asyncio.run(resumed.deal(seed1, skill)) == t[1]


def test_a_repair_run_draws_new_seeds_reuses_a_spent_corpus_and_never_touches_held_out_seeds(tmp_path):
    """teach --repair's runs: `fresh_after` leaves the earlier runs' seeds unused while the corpus has others;
    when it has none, they are used again (for the aimed task types); `avoid_seeds` are never used."""
    home = tmp_path / "home"
    small, big = corpus_of(tmp_path / "small", 6), corpus_of(tmp_path / "big", 12)
    first = teachgraph.run("open_domain_qa", [small], rounds=0, home=home, run_id="first", llm=fake_llm(),
                           model="fake", gates=False)
    first_ids = first.registry.seed_ids(["first"])
    held = sorted(first_ids)[:2]

    def used(run) -> set[str]:
        return {s["metadata"]["seed_id"] for s in run.samples()}

    # a corpus with more: only its new seeds
    fresh = teachgraph.run("open_domain_qa", [big], rounds=0, target=1, fresh_after=["first"], avoid_seeds=held,
                           home=home, run_id="fresh", llm=fake_llm(), model="fake", gates=False)
    assert used(fresh) and not used(fresh) & first_ids
    # the same spent corpus again: its seeds are used again, but never the held-out ones
    again = teachgraph.run("open_domain_qa", [small], rounds=0, target=1, fresh_after=["first"], avoid_seeds=held,
                           home=home, run_id="again", llm=fake_llm(), model="fake", gates=False)
    assert used(again) == first_ids - set(held)
    reasons = {r["seed"]: r["why"] for r in again.registry.failures("again") if r["node"] == "target"}
    assert set(reasons) == set(held) and all("held-out" in why for why in reasons.values())

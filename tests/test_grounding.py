"""Grounding: the lexical support gate on replies that answer from a passage, and the transformation
check that falls back to the seed's text (or rejects) when a transformed passage lost the seed's facts.
Planted grounded and ungrounded samples (tests/grounding_planted.py); precision and recall printed (-s)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json

import pytest

from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.llm import LLM
from teachgraph.gates import ChatSample, Pipeline, filter_lines, make_gate
from teachgraph.gates.text import support
from teachgraph.graphs.flow import kept_facts
from teachgraph.mix import Dealer
from teachgraph.runner import Home, LocalExecutor, Settings
from teachgraph.seeds import collect
from tests.conftest import Tally
from tests.flow_script import FlowScript, SchemaChatModel
from tests.grounding_planted import INVENTED, replies, transformations
from tests.test_skills import corpus  # noqa: F401  (a fixture)


def precision_recall(flagged: list[bool], bad: list[bool]) -> tuple[float, float]:
    hits = sum(f and b for f, b in zip(flagged, bad))
    return hits / max(1, sum(flagged)), hits / max(1, sum(bad))


def table(title: str, scores: list[float], bad: list[bool], thresholds, chosen: float) -> None:
    print(f"\n{title}: {len(scores)} planted ({sum(bad)} ungrounded)")
    for threshold in thresholds:
        p, r = precision_recall([s < threshold for s in scores], bad)
        mark = "   <- default" if threshold == chosen else ""
        print(f"  below {threshold:.2f}: precision {p:.2f} recall {r:.2f}{mark}")


def test_the_grounding_gate_finds_planted_ungrounded_replies():
    planted = replies()
    gate = make_gate("grounding", action="drop")
    samples = [ChatSample.from_row(row, "x") for row, _ in planted]
    bad = [not grounded for _, grounded in planted]
    scores = [support(s.response, s.instruction, gate.settings.n) for s in samples]
    table("replies, content-word unigram support in the passage", scores, bad,
          (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5), gate.settings.min_support)
    bigrams = [support(s.response, s.instruction, 2) for s in samples]
    table("replies, bigram support (n = 2)", bigrams, bad, (0.05, 0.1, 0.2, 0.3), None)
    verdicts = [gate.check(s) for s in samples]
    p, r = precision_recall([not v.keep for v in verdicts], bad)
    print(f"grounding gate at its defaults: precision {p:.2f}, recall {r:.2f}")
    assert p >= 0.9 and r >= 0.9
    dropped = next(v for v in verdicts if not v.keep)
    assert dropped.gate == "grounding" and "of the reply's content-word 1-grams are in the passage (needs 25%)" \
        in dropped.reason


def test_flag_keeps_the_row_and_says_why_and_short_replies_are_not_measured():
    passage = "The bisect module keeps a list in sorted order without sorting it again after each insertion."
    invented = {"id": "i", "messages": [{"role": "user", "content": f"{passage}\n\nWhat does it do?"},
                                        {"role": "assistant", "content": INVENTED[0]}]}
    letter = {"id": "l", "messages": [{"role": "user", "content": f"{passage}\n\n(A) or (B)?"},
                                      {"role": "assistant", "content": "Answer: B"}]}
    flag = make_gate("grounding")                         # action "flag" by default
    verdict = flag.check(ChatSample.from_row(invented, "i"))
    assert verdict.keep and verdict.flagged and verdict.gate == "grounding" and verdict.reason.startswith("0% ")
    assert flag.check(ChatSample.from_row(letter, "l")) == make_gate("grounding").check(
        ChatSample.from_row(letter, "l")) and not flag.check(ChatSample.from_row(letter, "l")).flagged
    # through the filter: a flagged row is kept (byte for byte) and counted as flagged
    source = io.BytesIO((json.dumps(invented) + "\n" + json.dumps(letter) + "\n").encode())
    kept, rejected = io.BytesIO(), io.BytesIO()
    counts = filter_lines(Pipeline([flag]), source, kept, rejected)
    assert counts.kept == 2 and counts.flagged == {"grounding": 1} and rejected.getvalue() == b""
    source.seek(0)
    counts = filter_lines(Pipeline([make_gate("grounding", action="drop")]), source, io.BytesIO(), rejected)
    assert counts.dropped == {"grounding": 1}
    assert json.loads(rejected.getvalue())["rejection"]["gate"] == "grounding"


def test_passage_skills_turn_grounding_on_in_skill_toml():
    for name, action in (("rag", "drop"), ("text_extraction", "drop"), ("reading_comprehension", "flag")):
        table = skills.load(name).spec.gates["grounding"]
        assert make_gate("grounding", **table).settings.action == action
    assert "grounding" not in skills.load("creative_content").spec.gates


def test_the_transformation_check_finds_planted_passages_that_lost_the_seed_s_facts():
    planted = transformations()
    rc = skills.load("reading_comprehension")
    rule = rc.spec.transform
    assert rule.keep_facts == "fallback"
    bad = [not keeps for _, _, keeps in planted]
    scores = [support(passage, seed) for seed, passage, _ in planted]
    table("transformed passages, content-word support in the seed", scores, bad,
          (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4), rule.min_seed_support)
    outcomes = [kept_facts(rc, "debate_passage", seed, passage) for seed, passage, _ in planted]
    fell_back = [o.get("transform_fallback") == "seed_text" for o in outcomes]
    p, r = precision_recall(fell_back, bad)
    print(f"fallback at reading_comprehension's settings: precision {p:.2f}, recall {r:.2f}")
    assert p >= 0.9 and r >= 0.9
    for (seed, _, _), outcome in zip(planted, outcomes):
        if outcome.get("transform_fallback"):
            assert outcome["content"] == seed and outcome["transform_note"].startswith("debate_passage kept too little")


class Inventing(FlowScript):
    """The transformation agent writes about something else than the seed (or copies it: `faithful`)."""

    def __init__(self, faithful: bool = False):
        super().__init__()
        self.faithful = faithful

    def reply(self, system: str, user: str, schema: dict) -> str:
        value = json.loads(super().reply(system, user, schema))
        if set(schema.get("properties", {})) >= {"content"} and "question" not in schema["properties"]:
            value["content"] = ("Moderator: today, the seed. " + user[-300:]) if self.faithful else " ".join(INVENTED)
        return json.dumps(value)


def run_rc(tmp_path, corpus, keep_facts: str, script: FlowScript):  # noqa: F811
    rc = skills.load("reading_comprehension")
    spec = rc.spec.model_copy(update={"transform": rc.spec.transform.model_copy(update={"keep_facts": keep_facts})})
    skill = dataclasses.replace(rc, spec=spec, transformations=tuple(
        t for t in rc.transformations if t.name == "debate_passage"))
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    settings = Settings(skill=skill.name, seeds=[str(corpus)], out=str(home.default_out("t")), rounds=0,
                        concurrency=2, model="fake")
    registry.create_run("t", skill.name, settings.to_json())
    registry.add_corpus("t", collect([corpus / "doc.md"]), limit=None, assign=Dealer([skill]), passage_chars=420)
    llm = LLM(chat=SchemaChatModel(script=script), model_name="fake", structured_mode="json_object")
    asyncio.run(LocalExecutor(registry, home, "t", skill, llm, settings, Tally()).run())
    return registry, [json.loads(body) for _, body in registry.samples("t")]


def test_an_invented_passage_falls_back_to_the_seed_s_text_recorded_in_the_lineage(tmp_path, corpus):  # noqa: F811
    registry, samples = run_rc(tmp_path, corpus, "fallback", Inventing())
    assert samples and registry.counts("t")["accepted"] == registry.counts("t")["total"]
    seed_text = registry.seed("t", samples[0]["metadata"]["seed_id"])["text"]
    for sample in samples:
        transformation = sample["metadata"]["transformation"]
        assert transformation["agent"] == "debate_passage" and transformation["fallback"] == "seed_text"
        assert transformation["seed_support"] < 0.2 and "used the seed's own text" in transformation["note"]
        assert sample["messages"][1]["content"].startswith(seed_text.strip()[:80])
        assert "Mona Lisa" not in sample["messages"][1]["content"]


def test_an_invented_passage_is_rejected_when_the_skill_says_so(tmp_path, corpus):  # noqa: F811
    registry, samples = run_rc(tmp_path, corpus, "reject", Inventing())
    assert samples == []
    [outcome] = registry.outcomes("t", "rejected")
    assert outcome["node"] == "transform" and outcome["reason"].startswith(
        "debate_passage kept too little of the seed: ") and outcome["reason"].endswith("(needs 20%)")


@pytest.mark.parametrize("keep_facts", ["fallback", "off"])
def test_a_faithful_passage_is_kept_with_its_measured_support(tmp_path, corpus, keep_facts):  # noqa: F811
    registry, samples = run_rc(tmp_path, corpus, keep_facts, Inventing(faithful=True))
    assert samples
    for sample in samples:
        transformation = sample["metadata"]["transformation"]
        assert "fallback" not in transformation and sample["messages"][1]["content"].startswith("Moderator: today")
        assert (transformation["seed_support"] >= 0.2) if keep_facts == "fallback" else (
            "seed_support" not in transformation)

"""The RAG graph with an in-process scripted model: topology, routing, the refinement loop,
rejections and lineage."""

from __future__ import annotations

import asyncio
import json

from langgraph.graph import END

from teachgraph import skills
from tests.conftest import run_in_process
from tests import rag_script
from tests.rag_script import RagScript


def compiled():
    return skills.load("rag").build_graph().compile()


def test_topology_has_the_agentinstruct_flow():
    graph = compiled().get_graph()
    assert set(graph.nodes) == {"__start__", "transform", "generate", "suggest", "edit", "answer", "gate",
                                "__end__"}
    edges = {(e.source, e.target, e.conditional) for e in graph.edges}
    assert ("__start__", "transform", False) in edges
    assert ("transform", "generate", False) in edges
    # only nodes that can reject have an edge to END
    # (and the gate, which every sample passes before it is written)
    assert {e.source for e in graph.edges if e.target == "__end__"} == {"generate", "gate"}
    # the refinement loop: suggester -> editor -> suggester, with exits to answer
    assert {("generate", "suggest", True), ("suggest", "edit", True), ("edit", "suggest", True),
            ("suggest", "answer", True), ("edit", "answer", True), ("generate", "answer", True)} <= edges
    assert ("answer", "gate", False) in edges and ("gate", "__end__", False) in edges


def test_routing_decisions():
    branches = compiled().builder.branches

    def router(node):  # the routers are async (they run on the event loop, not in a worker thread)
        route = next(iter(branches[node].values())).path.afunc
        return lambda state: asyncio.run(route(state))
    after_generate, after_suggest, after_edit = router("generate"), router("suggest"), router("edit")
    assert after_generate({"max_rounds": 0}) == "answer"
    assert after_generate({"max_rounds": 2}) == "suggest"
    assert after_generate({"max_rounds": 2, "rejected": "generate: junk"}) == END
    assert after_suggest({"refine_done": True}) == "answer"
    assert after_suggest({}) == "edit"
    assert after_edit({"round": 1, "max_rounds": 2}) == "suggest"
    assert after_edit({"round": 2, "max_rounds": 2}) == "answer"
    assert after_edit({"round": 1, "max_rounds": 2, "refine_done": True}) == "answer"


def _samples(registry, run_id="t1"):
    return [json.loads(body) for _, body in registry.samples(run_id)]


def test_refinement_loop_stops_at_rounds_even_if_the_suggester_never_does(tmp_path):
    script = RagScript(suggest_operations=["rewrite_query"] * 50)
    registry, _, _ = run_in_process(tmp_path, script.reply, limit=2, rounds=3)
    assert script.calls["edit"] == 2 * 3           # 3 rounds per seed, no more
    refined = [s for s in _samples(registry) if s["metadata"]["refinement_round"] > 0]
    assert {s["metadata"]["refinement_round"] for s in refined} == {3}
    assert all(len(s["metadata"]["refinements"]) == 3 for s in refined)


def test_refinement_stops_when_the_suggester_says_none(tmp_path):
    script = RagScript(suggest_operations=[])      # "none" straight away
    registry, _, _ = run_in_process(tmp_path, script.reply, limit=2, rounds=2)
    assert script.calls.get("edit", 0) == 0
    assert script.calls["suggest"] == 2
    samples = _samples(registry)
    assert len(samples) == 2 and all(s["metadata"]["refinement_round"] == 0 for s in samples)


def test_rounds_zero_skips_refinement(tmp_path):
    script = RagScript()
    run_in_process(tmp_path, script.reply, limit=2, rounds=0)
    assert "suggest" not in script.calls and "edit" not in script.calls


def test_samples_have_the_rag_shape_and_lineage(tmp_path):
    script = RagScript(suggest_operations=["rewrite_query", "add_near_miss"])
    registry, settings, llm = run_in_process(tmp_path, script.reply, limit=3, rounds=2)
    counts = registry.counts("t1")
    assert counts["accepted"] == 3 and counts["pending"] == 0
    samples = _samples(registry)
    assert len(samples) == 6                       # the seed item and its refined child, per seed
    by_id = {s["id"]: s for s in samples}
    for sample in samples:
        roles = [m["role"] for m in sample["messages"]]
        assert roles == ["system", "user", "assistant"]
        user = sample["messages"][1]["content"]
        assert "Query:" in user and "Document Id:" in user and "Provided Contextual Information" in user
        answer = json.loads(sample["messages"][2]["content"])
        ids = {int(i) for i in __import__("re").findall(r"Document Id: (\d+)", user)}
        assert answer["answer"] and set(answer["relevant_passages"]) <= ids
        meta = sample["metadata"]
        assert meta["seed_id"] and meta["seed_source"].startswith(str(settings.seeds[0]))
        assert meta["task_type"] in {t.name for t in skills.load("rag").taxonomy}
        assert meta["transformation"]["title"] and meta["transformation"]["passages"]
        assert meta["model"] == "scripted"
        if meta["refinement_round"]:
            parent = by_id[meta["parent_sample_id"]]
            assert parent["metadata"]["refinement_round"] == 0
            assert meta["original_query"] == parent["metadata"]["original_query"]
            assert [r["operation"] for r in meta["refinements"]] == ["rewrite_query", "add_near_miss"]
        else:
            assert meta["parent_sample_id"] is None
    # every call was counted, and the output file matches the registry line for line
    assert counts["llm_calls"] == llm.usage.calls == sum(script.calls.values())
    lines = open(settings.out).read().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(by_id)


def test_distractors_come_from_other_seeds(tmp_path):
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=6, rounds=0)
    for sample in _samples(registry):
        passages = sample["metadata"]["transformation"]["passages"]
        own = [p for p in passages if p["kind"] == "own"]
        others = [p for p in passages if p["kind"] == "distractor"]
        assert own and all(p["seed_id"] == sample["metadata"]["seed_id"] for p in own)
        assert others and all(p["seed_id"] != sample["metadata"]["seed_id"] for p in others)


def test_answer_absent_type_removes_the_key_passages(tmp_path):
    skill = skills.load("rag")
    ordinal = [t.name for t in skill.taxonomy].index("answer_absent")
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=ordinal + 1, rounds=0)
    sample = next(s for s in _samples(registry) if s["metadata"]["task_type"] == "answer_absent")
    own_ids = {p["pid"] for p in sample["metadata"]["transformation"]["passages"] if p["kind"] == "own"}
    shown = {int(i) for i in __import__("re").findall(r"Document Id: (\d+)", sample["messages"][1]["content"])}
    assert own_ids and not (own_ids & shown)


def test_unusable_output_rejects_with_a_reason_and_loses_nothing(tmp_path):
    script = RagScript(garbage_for={"generate"})
    registry, _, _ = run_in_process(tmp_path, script.reply, limit=3, rounds=1)
    counts = registry.counts("t1")
    assert counts["rejected"] == 3 and counts["accepted"] == 0 and counts["pending"] == 0
    reasons = registry.outcomes("t1", "rejected")
    assert reasons[0]["node"] == "generate"
    assert reasons[0]["reason"].startswith("Query:") and "after 2 corrections" in reasons[0]["reason"]
    assert script.calls["generate"] == 3 * 3       # first try + 2 corrections, per seed


def test_unusable_refinement_keeps_the_seed_item(tmp_path):
    script = RagScript(garbage_for={"edit"})
    registry, _, _ = run_in_process(tmp_path, script.reply, limit=2, rounds=2)
    samples = _samples(registry)
    assert registry.counts("t1")["accepted"] == 2
    assert all(s["metadata"]["refinement_round"] == 0 for s in samples)
    assert all("refinement stopped" in s["metadata"]["refinements"][-1]["note"] for s in samples)


def test_unusable_transform_falls_back_to_the_document_title(tmp_path):
    script = RagScript(garbage_for={"transform"})
    registry, _, _ = run_in_process(tmp_path, script.reply, limit=2, rounds=0)
    samples = _samples(registry)
    assert len(samples) == 2
    assert all("used the document title" in s["metadata"]["transformation"]["note"] for s in samples)


def test_endpoint_errors_fail_the_seed_at_its_node(tmp_path):
    def broken(system, user):
        if "You write one query" in user:
            raise ConnectionError("endpoint went away")
        return RagScript().reply(system, user)

    registry, _, _ = run_in_process(tmp_path, broken, limit=2, rounds=1)
    counts = registry.counts("t1")
    assert counts["failed"] == 2 and counts["total"] == 2
    failed = registry.outcomes("t1", "failed")
    assert failed[0]["node"] == "generate" and "endpoint went away" in failed[0]["reason"]


def test_an_item_left_with_no_passages_is_answered_with_no_citations(tmp_path):
    # One seed: no other seeds to draw distractors from, so dropping its passages empties the context.
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "only.txt").write_text("The bisect module keeps a list in sorted order without sorting it again. " * 6)
    script = RagScript(suggest_operations=["drop_key_passages"])
    registry, _, _ = run_in_process(tmp_path, script.reply, limit=1, rounds=1, seeds=seeds)
    refined = next(s for s in _samples(registry) if s["metadata"]["refinement_round"] == 1)
    assert "Document Id:" not in refined["messages"][1]["content"]
    assert json.loads(refined["messages"][2]["content"])["relevant_passages"] == []


def test_a_seeds_calls_share_their_prompt_up_to_the_end_of_its_passages(tmp_path):
    """generate, suggest, edit and answer have one system prompt and open their user turn with the
    item's passages; what differs by agent (instructions, query, history, the reply's fields) comes
    after. So every later call of a seed starts with its generate call's prompt up to the end of the
    passages, which the embedded server's prompt cache then evaluates once per seed, not per call.
    A passage an edit adds comes last for the agents, even a conflicting one, which the sample shuffles
    in (graphs/rag.py agent_passages), so the refined item still shares the original passages."""
    calls: list[tuple[str, str, str]] = []
    script = RagScript(suggest_operations=["add_conflicting_passage", "add_near_miss"])

    def recording(system: str, user: str) -> str:
        calls.append((rag_script.agent_of(system, user), system, user))
        return script.reply(system, user)

    run_in_process(tmp_path, recording, limit=3, rounds=2)
    later = [(agent, f"{system}\x00{user}") for agent, system, user in calls if agent != "transform"]
    heads = [text.split("\n\nYou write one query")[0] for agent, text in later if agent == "generate"]
    assert len(set(heads)) == 3 and all("Document Id: " in head for head in heads)
    assert sorted({agent for agent, _ in later}) == ["answer", "edit", "generate", "suggest"]
    assert len(later) == 3 * (1 + 2 * 2 + 2)
    for agent, text in later:
        assert sum(text.startswith(head) for head in heads) == 1, f"{agent}: {text[:300]}"
    assert len({system for agent, system, _ in calls if agent != "transform"}) == 1

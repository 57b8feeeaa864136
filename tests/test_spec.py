"""Typed contracts: skill.toml is validated when a skill loads (unknown keys, unfilled prompt
placeholders), every graph writes one Sample shape with one refinement history, and extension points
(checks) register one way, with a model handle so that a judge is just a check."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from teachgraph import skills
from teachgraph.nodes import checks
from teachgraph.extensions import Registry, UnknownName
from teachgraph.nodes.sample import Refinement, Sample
from tests.conftest import run_in_process
from tests.flow_script import FlowScript
from tests.rag_script import RagScript, agent_of
from tests.test_skills import corpus, run_skill  # noqa: F401  (corpus is a fixture)


@pytest.fixture
def skill_dir(tmp_path, monkeypatch):
    """A copy of the bundled skills that a test may break; skills.load reads it."""
    folder = tmp_path / "skills"
    shutil.copytree(skills.SKILLS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(skills, "SKILLS_DIR", folder)
    return folder


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# ---- the skill spec ----

def test_every_bundled_skill_loads_and_builds():
    for name in skills.available():
        skill = skills.load(name)
        assert skill.spec.name == name and skill.spec.graph
        skill.build_graph()


@pytest.mark.parametrize("edit, key", [
    (lambda t: t.replace('checks = ["choice_key"]', 'chekcs = ["choice_key"]'), "chekcs"),
    (lambda t: t.replace("rounds = 1", "round = 1"), "refinement.round"),
    (lambda t: t.replace("corrections = 1", "corections = 1"), "response.corections"),
    (lambda t: t.replace('choice_a = { description = "option A", max_length = 200 }',
                         'choice_a = { description = "option A", max_lenght = 200 }'), "item.choice_a.max_lenght"),
    (lambda t: t.replace('name = "flip_answer"', 'name = "flip_answer"\nedit_content = true'),
     "refinement.goals.2.edit_content"),
    (lambda t: t + "\n[transfrom]\nextend = true\n", "transfrom"),
])
def test_a_misspelt_key_in_skill_toml_is_refused_with_the_file_and_key(skill_dir, edit, key):
    path = skill_dir / "mcq" / "skill.toml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(skills.SkillError) as caught:
        skills.load("mcq")
    message = str(caught.value)
    assert message == f"{path}: unknown key {key!r}"


def test_a_bad_value_in_skill_toml_is_refused_in_one_line(skill_dir):
    path = skill_dir / "conversation" / "skill.toml"
    path.write_text(path.read_text().replace('mode = "follow_up"', 'mode = "followup"'))
    with pytest.raises(skills.SkillError, match=r"skill\.toml: response\.mode: Input should be 'single', "
                                                r"'follow_up' or 'tool_calls'$") as caught:
        skills.load("conversation")
    assert "\n" not in str(caught.value)


def test_defaults_live_in_the_spec():
    rag = skills.load("rag").spec
    assert (rag.context.distractors, rag.refinement.rounds) == (3, 2)
    mcq = skills.load("mcq").spec
    assert mcq.response.mode == "single" and mcq.response.turns == 1 and mcq.transform.max_apis == 6
    assert set(mcq.response.fields) == {"explanation", "answer"}     # its settings are not fields
    assert mcq.item["answer_key"].enum == ("A", "B", "C", "D")


def _write_prompts(path: Path, prompts: dict) -> None:
    """prompts.toml from a dict of tables of strings and numbers (JSON strings are TOML basic strings)."""
    path.write_text("".join(f"[{agent}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in spec.items())
                            for agent, spec in prompts.items()))


@pytest.mark.parametrize("skill, agent, part, placeholder", [
    ("mcq", "sample", "user", "questoin"),        # a misspelt item field
    ("fermi", "sample", "assistant", "reslt"),    # a misspelt check extra ($result)
    ("rag", "suggest", "system", "task_type"),    # a value generate gets, suggest does not
    ("tool_use", "simulate_tools", "user", "conversation"),
])
def test_a_prompt_placeholder_no_input_fills_is_refused(skill_dir, skill, agent, part, placeholder):
    import tomllib
    path = skill_dir / skill / "prompts.toml"
    prompts = tomllib.loads(path.read_text())
    prompts.setdefault(agent, {})
    prompts[agent][part] = prompts[agent].get(part, "") + f"\n${placeholder}"
    _write_prompts(path, prompts)
    with pytest.raises(skills.SkillError) as caught:
        skills.load(skill)
    message = str(caught.value)
    assert message.startswith(f"{path}: [{agent}] {part} uses ${placeholder}, which no input fills (it is given: ")
    assert "\n" not in message


def test_prompts_that_use_only_given_placeholders_load(skill_dir):
    import tomllib
    path = skill_dir / "fermi" / "prompts.toml"
    prompts = tomllib.loads(path.read_text())
    prompts["sample"]["assistant"] += "\n$unit, ${result}, $$5 a piece"     # $$ is a literal dollar
    _write_prompts(path, prompts)
    assert "$$5" in skills.load("fermi").prompt("sample").assistant


def test_the_inputs_each_agent_is_given_are_the_ones_its_graph_declares(tmp_path, corpus, monkeypatch):  # noqa: F811
    """prompt_inputs is what check_placeholders trusts: record what every agent's prompt really gets."""
    seen: dict[str, set[frozenset[str]]] = {}
    original = skills.Skill.prompt

    def recording(self, agent):
        prompt = original(self, agent)

        @dataclasses.dataclass(frozen=True)
        class Recorded(skills.Prompt):
            def render(inner, **values):
                seen.setdefault(agent, set()).add(frozenset(values))
                return prompt.render(**values)

        return Recorded(**{f.name: getattr(prompt, f.name) for f in dataclasses.fields(prompt)})

    monkeypatch.setattr(skills.Skill, "prompt", recording)
    agents = set()
    for name, script in [("tool_use", FlowScript()), ("conversation", FlowScript()),
                         ("coding", FlowScript(wrong={"code"}))]:
        skill = skills.load(name)
        seen.clear()
        run_skill(tmp_path / name, corpus, skill, script)
        declared = skill.graph_module().prompt_inputs(skill.spec)
        for agent, given in seen.items():
            if agent != "sample":   # flow renders [sample] with its own render (the item's fields)
                assert given == {declared[agent]["user"]}, (name, agent)
        agents |= set(seen)
    # every flow agent was seen; coding's failing code was sent back once (correction)
    assert agents >= {"transform", "extend", "generate", "suggest", "edit", "answer", "correction", "follow_up",
                      "simulate_tools"}, agents
    seen.clear()
    run_in_process(tmp_path / "rag", RagScript().reply, limit=2, rounds=1)
    declared = skills.load("rag").graph_module().prompt_inputs(skills.load("rag").spec)
    for agent, given in seen.items():
        parts = declared[agent]
        assert all(keys <= parts["user"] for keys in given), agent
        if agent != "sample":
            assert given == {parts["user"]}, agent


# ---- one Sample, one refinement history ----

def test_flow_and_rag_samples_have_one_shape(tmp_path, corpus):  # noqa: F811
    _, flow = run_skill(tmp_path / "flow", corpus, skills.load("mcq"), FlowScript())
    registry, _, _ = run_in_process(tmp_path / "rag", RagScript().reply, limit=2, rounds=2)
    rag = [json.loads(body) for _, body in registry.samples("t1")]
    for sample in flow + rag:
        assert Sample.model_validate(sample).record() == sample     # nothing outside the model, nothing lost
    refined = [s for s in flow + rag if s["metadata"]["refinement_round"]]
    assert {s["skill"] for s in refined} == {"mcq", "rag"}
    for sample in refined:
        for entry in sample["metadata"]["refinements"]:
            assert entry["operation"] and entry["suggestion"]       # the same vocabulary in every graph
    assert [r["operation"] for r in refined[0]["metadata"]["refinements"]] == ["harder_distractors"]


class EditorFails(FlowScript):
    """Over one seed: the first request for an MCQ item is generate's; every later one (the editor's,
    and its corrections) gets junk."""

    item_requests = 0

    def reply(self, system: str, user: str, schema: dict) -> str:
        if "answer_key" in schema.get("properties", {}):
            self.item_requests += 1
            if self.item_requests > 1:
                return "not json"
        return super().reply(system, user, schema)


def test_a_flow_editor_that_fails_records_the_goal_it_was_applying(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "doc.md").write_text("# Weather in Paris\n\nParis has mild weather; rain falls on 110 days a year. " * 6)
    script = EditorFails()
    _, samples = run_skill(tmp_path, folder, skills.load("mcq"), script)
    assert script.item_requests == 4                 # generate, then the editor's reply and 2 corrections
    [sample] = samples                               # the seed task's sample stands
    [entry] = sample["metadata"]["refinements"]
    assert entry["round"] == 1 and entry["operation"] == "harder_distractors"   # was "" before
    assert entry["note"].startswith("refinement stopped, edit output unusable")


class SuggesterFailsInRoundTwo(RagScript):
    def reply(self, system: str, user: str) -> str:
        # the history of earlier rounds is in the user turn (skills/rag/prompts.toml: what varies comes
        # last); the script sees a correction's first user turn too (conftest.run_in_process), so the
        # corrections fail again
        if agent_of(system, user) == "suggest" and "round 1:" in user:
            return "not json"
        return super().reply(system, user)


def test_a_suggester_that_fails_records_no_operation_of_an_earlier_round(tmp_path):
    registry, _, _ = run_in_process(tmp_path, SuggesterFailsInRoundTwo().reply, limit=2, rounds=2)
    refined = [json.loads(body) for _, body in registry.samples("t1")]
    refined = [s for s in refined if s["metadata"]["refinement_round"]]
    assert len(refined) == 2
    for sample in refined:
        done, stopped = sample["metadata"]["refinements"]
        assert done["operation"] == "rewrite_query"
        assert stopped["round"] == 2 and "operation" not in stopped     # it chose nothing
        assert stopped["note"].startswith("refinement stopped, suggest output unusable")
        assert Refinement.model_validate(stopped).record() == stopped


# ---- one registration pattern; a judge is a check ----

def test_a_registry_names_the_known_entries_when_asked_for_an_unknown_one():
    gates: Registry = Registry("gate")
    gates.register("length")(len)
    assert gates.get("length") is len and "length" in gates and gates.names() == ["length"]
    with pytest.raises(UnknownName, match=r"^unknown gate 'lenght' \(known: length\)$"):
        gates.get("lenght")
    with pytest.raises(ValueError, match="registered twice"):
        gates.register("length")(len)
    assert {"choice_key", "label_in_set", "python_compute", "python_tests", "tool_arguments",
            "web_actions"} <= set(checks.CHECKS.names())


class Judgement(BaseModel):
    acceptable: bool = Field(description="true if the answer is accurate and complete")
    reason: str = Field(max_length=300, description="why, in one sentence")


@checks.check("strict_judge")
async def strict_judge(item: dict, response: dict, model: checks.Model) -> checks.Verdict:
    verdict = await model.ask("You judge an answer to a question. Say whether it is acceptable.",
                              f"Question: {item['question']}\n\nAnswer: {response['answer']}", Judgement)
    return checks.Verdict("strict_judge", verdict.acceptable, f"a judge found: {verdict.reason}")


class JudgeScript(FlowScript):
    def __init__(self, acceptable: bool):
        super().__init__()
        self.acceptable = acceptable
        self.judged = 0

    def reply(self, system: str, user: str, schema: dict) -> str:
        if system.startswith("You judge an answer"):
            self.judged += 1
            self.calls.append("judge")
            return json.dumps({"acceptable": self.acceptable, "reason": "the answer misses the second step"})
        return super().reply(system, user, schema)


@pytest.mark.parametrize("acceptable", [True, False])
def test_a_judge_is_a_check_that_asks_the_run_s_model(tmp_path, corpus, acceptable):  # noqa: F811
    odqa = skills.load("open_domain_qa")
    judged = dataclasses.replace(odqa, spec=odqa.spec.model_copy(update={"checks": ("strict_judge",)}))
    script = JudgeScript(acceptable)
    registry, samples = run_skill(tmp_path, corpus, judged, script, rounds=0)
    counts = registry.counts("t")
    assert counts["llm_calls"] == len(script.calls)          # the judge's calls count like any other
    if acceptable:
        assert script.judged == 2 and counts["accepted"] == 2
        assert all(s["metadata"]["checks"] == [{"check": "strict_judge", "ok": True}] for s in samples)
    else:  # the judge's feedback went back to the answer agent once, then the seed was rejected
        assert script.judged == 4 and samples == []
        [outcome] = registry.outcomes("t", "rejected")
        assert outcome["node"] == "answer" and outcome["seeds"] == 2
        assert outcome["reason"] == "check strict_judge failed: a judge found: the answer misses the second step"

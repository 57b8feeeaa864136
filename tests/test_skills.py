"""The 17 skills: taxonomies load and validate, every flow runs on a fake model and yields samples in
its split's shape, checks send failures back and then reject, and mixes apportion seeds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.llm import LLM
from teachgraph.mix import Dealer, load_mix
from teachgraph.runner import LocalExecutor, Home, Settings
from teachgraph.seeds import collect
from tests.conftest import Tally, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.flow_script import FlowScript, SchemaChatModel

ISSUE_SKILLS = {"reading_comprehension", "open_domain_qa", "text_modification", "web_agent", "brain_teaser",
                "analytical_reasoning", "mcq", "data_to_text", "fermi", "coding", "text_extraction",
                "text_classification", "rag", "tool_use", "creative_content", "few_shot_reasoning", "conversation"}
FLOW_SKILLS = sorted(ISSUE_SKILLS - {"rag"})


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "doc.md").write_text("# Weather in Paris\n\n" + "Paris has mild weather; rain falls on about "
                                   "110 days a year and summers average 25 degrees. " * 6)
    (folder / "mod.py").write_text("def add(a, b):\n    '''Add two numbers.'''\n    return a + b\n\n" * 8)
    return folder


def run_skill(tmp_path: Path, corpus: Path, skill: skills.Skill, script: FlowScript, rounds: int = 1):
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    settings = Settings(skill=skill.name, seeds=[str(corpus)], out=str(home.default_out("t")), rounds=rounds,
                        concurrency=2, model="fake")
    registry.create_run("t", skill.name, settings.to_json())
    registry.add_corpus("t", collect([corpus]), limit=None, assign=Dealer([skill]), passage_chars=420)
    llm = LLM(chat=SchemaChatModel(script=script), model_name="fake", structured_mode="json_object")
    asyncio.run(LocalExecutor(registry, home, "t", skill, llm, settings, Tally()).run())
    samples = [json.loads(body) for _, body in registry.samples("t")]
    return registry, samples


# ---- taxonomies ----

def test_all_seventeen_skills_load_with_more_than_100_task_types():
    assert set(skills.available()) == ISSUE_SKILLS
    loaded = {name: skills.load(name) for name in skills.available()}
    assert sum(len(s.taxonomy) for s in loaded.values()) > 100
    assert len(loaded["reading_comprehension"].taxonomy) == 43
    assert len(loaded["text_modification"].taxonomy) == 18
    assert len(loaded["tool_use"].taxonomy) == 7
    assert {t.name for t in loaded["reading_comprehension"].transformations} >= {  # the paper's nine
        "argument_passage", "debate_passage", "conversation_passage", "meeting_transcript", "poem",
        "satirical_passage", "instructional_passage", "long_text", "identity"}
    for skill in loaded.values():
        for transformation in skill.transformations:  # every transformation has questions routed to it
            assert [t for t in skill.taxonomy if t.fits(transformation.name)], (skill.name, transformation.name)


def test_reading_comprehension_routes_question_types_by_transformation():
    rc = skills.load("reading_comprehension")
    routed = [t for t in rc.taxonomy if t.transformations]
    assert routed, "some question types are only for some passage kinds"
    assigner = rc.assigner()
    for n in range(60):
        transformation, task_type = assigner(f"seed{n}", "text")
        assert rc.task_type(task_type).fits(transformation)


@pytest.mark.parametrize("body, message", [
    ("", "no task types"),
    ('[[types]]\nname = "a"\ndescription = "x"\n[[types]]\nname = "a"\ndescription = "y"\n', "duplicate task type"),
    ('[[types]]\nname = "a"\ndescription = ""\n', "needs a name and a description"),
    ('[[transformations]]\nname = "t"\ndescription = "d"\n[[types]]\nname = "a"\ndescription = "x"\n'
     'transformations = ["nope"]\n', "unknown transformations"),
    ('[[transformations]]\nname = "t"\ndescription = "d"\nkinds = ["image"]\n', "kinds must be"),
])
def test_bad_taxonomies_are_refused(tmp_path: Path, body: str, message: str):
    path = tmp_path / "taxonomy.toml"
    path.write_text(body)
    with pytest.raises(skills.SkillError, match=message):
        skills._load_taxonomy(path, skills._load_transformations(path))


def test_aliases_and_split_names_resolve():
    assert skills.resolve("rc") == "reading_comprehension"
    assert skills.resolve("code_") == "coding"
    assert skills.resolve("follow_up") == "conversation"
    assert skills.resolve("struct2text_flow") == "data_to_text"
    assert skills.resolve("fs_cot_flow") == "few_shot_reasoning"
    assert skills.resolve("webagent_flow") == "web_agent"
    with pytest.raises(skills.SkillError, match="unknown skill 'poetry'"):
        skills.resolve("poetry")


# ---- every flow on a fake model ----

def _turns(sample: dict) -> list[str]:
    return [m["role"] for m in sample["messages"]]


SHAPES = {
    "mcq": lambda s: "A) " in s["messages"][1]["content"] and "D) " in s["messages"][1]["content"]
    and s["messages"][-1]["content"].endswith("Answer: B"),
    "analytical_reasoning": lambda s: s["messages"][-1]["content"].endswith("Answer: (B)"),
    "coding": lambda s: s["messages"][-1]["content"].startswith("```python\ndef add")
    and s["metadata"]["checks"][0]["ok"],
    "fermi": lambda s: "8e6 * 0.25 / 100 = 20,000" in s["messages"][-1]["content"]
    and "about 20,000 piano tuners" in s["messages"][-1]["content"],
    "text_modification": lambda s: "\n\nText:\n" in s["messages"][1]["content"],
    "text_extraction": lambda s: s["messages"][1]["content"].startswith("**Task Description:**")
    and "**Text:**" in s["messages"][1]["content"],
    "text_classification": lambda s: "Labels: positive, negative, neutral" in s["messages"][1]["content"]
    and s["messages"][-1]["content"].startswith("Label: neutral"),
    "web_agent": lambda s: '[2] textbox "Search"' in s["messages"][1]["content"]
    and "Actions:\ntype [2]" in s["messages"][-1]["content"],
    "conversation": lambda s: _turns(s) == ["system"] + ["user", "assistant"] * 3
    and s["messages"][1]["content"].startswith("**Task Description:**"),
    "tool_use": lambda s: _turns(s) == ["system", "user", "assistant", "tool", "assistant"]
    and s["messages"][2]["tool_calls"][0]["function"]["name"] == "get_weather"
    and json.loads(s["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    and '"name": "get_weather"' in s["messages"][0]["content"],
    "few_shot_reasoning": lambda s: s["messages"][1]["content"].rstrip().endswith("A:")
    and "The answer is" in s["messages"][-1]["content"],
    "reading_comprehension": lambda s: "Answer:" in s["messages"][-1]["content"],
}


@pytest.mark.parametrize("name", FLOW_SKILLS)
def test_skill_runs_on_a_fake_model_and_yields_samples_in_its_shape(tmp_path, corpus, name):
    skill = skills.load(name)
    registry, samples = run_skill(tmp_path, corpus, skill, FlowScript())
    counts = registry.counts("t")
    assert counts["pending"] == 0 and counts["failed"] == 0
    assert counts["total"] == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] >= 1 and samples
    for sample in samples:
        assert sample["skill"] == name
        roles = _turns(sample)
        assert roles[0] == "system" and roles[1] == "user" and roles[-1] == "assistant"
        assert all(m["content"].strip() for m in sample["messages"][1:] if m["role"] == "user")
        meta = sample["metadata"]
        assert skill.task_type(meta["task_type"])
        assert meta["transformation"]["agent"] in {t.name for t in skill.transformations}
        if name in SHAPES:
            assert SHAPES[name](sample), json.dumps(sample["messages"], indent=1)[:3000]
    # refinement changed the task, so each accepted seed has a child sample pointing at its parent
    children = [s for s in samples if s["metadata"]["parent_sample_id"]]
    assert children and all(c["metadata"]["refinement_round"] == 1 for c in children)
    ids = {s["id"] for s in samples}
    assert all(c["metadata"]["parent_sample_id"] in ids for c in children)


@pytest.mark.parametrize("name, wrong, check", [
    ("coding", "code", "python_tests"), ("fermi", "calculation", "python_compute"),
    ("mcq", "answer", "choice_key"), ("text_classification", "label", "label_in_set"),
    ("web_agent", "actions", "web_actions"), ("tool_use", "arguments", "tool_arguments"),
])
def test_a_failed_check_goes_back_to_the_answer_agent_then_rejects(tmp_path, corpus, name, wrong, check):
    script = FlowScript(wrong={wrong})
    registry, samples = run_skill(tmp_path, corpus, skills.load(name), script, rounds=0)
    counts = registry.counts("t")
    assert samples == [] and counts["rejected"] == counts["total"] == 2
    reasons = registry.outcomes("t", "rejected")
    assert all(r["node"] == "answer" and f"check {check} failed" in r["reason"] for r in reasons), reasons
    answers = [c for c in script.calls if c in ("answer,explanation", "code,explanation",
                                                "assumptions,calculation,unit", "justification,label",
                                                "actions,reasoning", "action,calls,message")]
    assert len(answers) == 4  # per seed: the answer and one correction with the check's feedback


class RefinedKeyDiffers(FlowScript):
    """The editor's rewrite gets answer key A; the answer agent keeps saying B."""

    def reply(self, system: str, user: str, schema: dict) -> str:
        value = json.loads(super().reply(system, user, schema))
        if system.startswith("You rewrite a task") and "answer_key" in value:
            value["answer_key"] = "A"
        return json.dumps(value)


def test_a_refined_task_that_fails_leaves_the_seed_accepted_with_the_reason(tmp_path, corpus):
    """The seed task's sample stands; why the refined task got none is kept in the registry."""
    registry, samples = run_skill(tmp_path, corpus, skills.load("mcq"), RefinedKeyDiffers(), rounds=1)
    counts = registry.counts("t")
    assert counts["accepted"] == counts["total"] == 2 and len(samples) == 2
    assert all(s["metadata"]["refinement_round"] == 0 for s in samples)
    reasons = [row["reason"] for row in registry.db.query("select reason from seeds where run_id = 't'")]
    assert all(r and "check choice_key failed" in r for r in reasons), reasons


def test_a_misspelt_check_stops_the_skill_before_any_model_call():
    import dataclasses
    mcq = skills.load("mcq")
    misspelt = dataclasses.replace(mcq, spec=mcq.spec.model_copy(update={"checks": ("choice_kee",)}))
    with pytest.raises(skills.SkillError, match="unknown check 'choice_kee'"):
        misspelt.build_graph()
    mcq.build_graph()   # the real name builds


def test_a_skill_rejects_seeds_of_a_kind_it_cannot_use(tmp_path, corpus):
    text_only = skills.load("open_domain_qa")
    text_only = dataclasses.replace(text_only, transformations=tuple(
        t for t in text_only.transformations if t.kinds == ("text",)))
    script = FlowScript()
    registry, samples = run_skill(tmp_path, corpus, text_only, script)
    rejected = registry.outcomes("t", "rejected")
    assert rejected == [{"node": "transform", "reason": "skill open_domain_qa cannot use a code seed (it takes text)",
                         "seeds": 1}]
    assert registry.counts("t")["accepted"] == 1


def test_a_seed_the_transformation_agent_judges_unfit_is_rejected_with_its_reason(tmp_path, corpus):
    script = FlowScript(wrong={"fits"})
    registry, samples = run_skill(tmp_path, corpus, skills.load("tool_use"), script)
    assert samples == []
    assert registry.outcomes("t", "rejected") == [{
        "node": "transform", "seeds": 2,
        "reason": "skill tool_use cannot use this seed: it is a poem, not software or a service"}]
    assert len(script.calls) == 2  # one transform call per seed, nothing after


def test_tool_use_absent_api_cases_hide_the_needed_api(tmp_path, corpus):
    skill = skills.load("tool_use")
    absent = [t for t in skill.taxonomy if t.context_op == "drop_needed_apis"]
    assert len(absent) == 2
    only_absent = dataclasses.replace(skill, taxonomy=tuple(absent))
    registry, samples = run_skill(tmp_path, corpus, only_absent, FlowScript(), rounds=0)
    assert samples
    for sample in samples:
        assert '"get_weather"' not in sample["messages"][0]["content"]  # the needed API is not offered
        assert sample["metadata"]["task"]["needed_apis"] == ["get_weather"]
        assert [m["role"] for m in sample["messages"]] == ["system", "user", "assistant"]
        assert sample["messages"][-1]["content"] == "None of the tools given can get the weather."


# ---- mixes ----

def test_orca_mix_follows_the_public_split_sizes():
    weights = load_mix("orca")
    assert set(weights) == ISSUE_SKILLS
    dealer = Dealer([skills.load(name) for name in weights], weights)
    dealt = Counter(dealer(f"s{n}", "text")[0] for n in range(2000))
    total = sum(weights.values())
    for name, weight in weights.items():
        assert abs(dealt[name] - 2000 * weight / total) <= 2, name


def test_mix_sends_code_seeds_only_to_skills_that_take_code(tmp_path):
    weights = {"reading_comprehension": 1.0, "coding": 1.0}
    rc = skills.load("reading_comprehension")
    text_only_rc = dataclasses.replace(rc, transformations=tuple(t for t in rc.transformations
                                                                 if "code" not in t.kinds))
    dealer = Dealer([text_only_rc, skills.load("coding")], weights)
    assert {dealer(f"c{n}", "code")[0] for n in range(10)} == {"coding"}
    assert Counter(dealer(f"t{n}", "text")[0] for n in range(10))["reading_comprehension"] >= 5


def test_mix_files_and_bad_mixes(tmp_path):
    mix = tmp_path / "mix.toml"
    mix.write_text('rc = 3\ncoding = 1\nfermi = 0\n')
    assert load_mix(str(mix)) == {"reading_comprehension": 3.0, "coding": 1.0}
    assert set(load_mix("uniform")) == ISSUE_SKILLS
    (tmp_path / "bad.toml").write_text('poetry = 1\n')
    with pytest.raises(skills.SkillError, match="unknown skill"):
        load_mix(str(tmp_path / "bad.toml"))
    with pytest.raises(skills.SkillError, match="unknown mix"):
        load_mix("nonexistent")


# ---- the CLI ----

@pytest.mark.slow
def test_graph_list_and_show_every_skill(tmp_path):
    listed = run_cli("graph", "list", home=tmp_path)
    assert listed.returncode == 0
    assert {line.split("\t")[0] for line in listed.stdout.splitlines()} == ISSUE_SKILLS
    for name in sorted(ISSUE_SKILLS) + ["rc", "code_"]:
        shown = run_cli("graph", "show", name, home=tmp_path)
        assert shown.returncode == 0 and "answer" in shown.stdout, (name, shown.stderr)


@pytest.mark.slow
def test_graph_run_all_with_a_mix_over_the_http_fake(tmp_path, corpus):
    script = FlowScript()
    with FakeOpenAI(responder=script.http_responder) as server:
        done = run_cli("graph", "run", "all", "--mix", "uniform", "--seeds", str(corpus), "--run-id", "mixed",
                       "--base-url", server.base_url, "--model", "fake", "--structured", "json_object",
                       "--rounds", "0", home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(run_cli("runs", "show", "mixed", "--json", home=tmp_path).stdout)
    counts = report["counts"]
    assert counts["total"] == counts["accepted"] + counts["rejected"] and counts["pending"] == 0
    per_skill = {row["skill"]: row for row in report["skills"]}
    assert len(per_skill) == counts["total"]   # uniform: each seed to a different skill
    lines = (Path(report["run"]["settings"]["out"])).read_text().splitlines()
    assert {json.loads(line)["skill"] for line in lines} == {s for s, r in per_skill.items() if r["accepted"]}


# ---- resume ----

@pytest.mark.parametrize("name", ["conversation", "tool_use", "coding"])
def test_flow_resumes_from_every_step_boundary(tmp_path, monkeypatch, name):
    """Cut a finished seed's thread after each checkpoint (keeping that step's saved writes, as a kill
    would leave it) and resume: same samples, and recorded calls = the uninterrupted run's."""
    import shutil

    import teachgraph.runner as runner
    from tests.test_resume_points import _checkpoint_ids, _cut_after

    monkeypatch.setattr(runner, "forget_thread", lambda saver, thread: asyncio.sleep(0))
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "mod.py").write_text("def add(a, b):\n    '''Add two numbers.'''\n    return a + b\n" * 4)
    skill = skills.load(name)
    first = FlowScript()
    registry, samples = run_skill(tmp_path / "full", folder, skill, first)
    total = registry.counts("t")["llm_calls"]
    assert total == len(first.calls) and len(samples) == 2
    home = Home(tmp_path / "full" / "home")
    checkpoints = _checkpoint_ids(home.checkpoints_path)
    assert len(checkpoints) >= 8
    redone = []
    for index, keep in enumerate(checkpoints[:-1]):
        work = Home(tmp_path / f"cut{index}")
        shutil.copytree(home.root, work.root)
        _cut_after(work.checkpoints_path, keep)
        reg = Registry(work.registry_path)
        with reg.db.conn:
            reg.db.execute("update seeds set status = 'pending', samples = 0 where run_id = 't'")
            reg.db.execute("delete from samples where run_id = 't'")
        again = FlowScript()
        llm = LLM(chat=SchemaChatModel(script=again), model_name="fake", structured_mode="json_object")
        settings = Settings(skill=name, seeds=[str(folder)], out=str(work.default_out("t")), rounds=1, model="fake")
        asyncio.run(LocalExecutor(reg, work, "t", skill, llm, settings, Tally()).run())
        counts = reg.counts("t")
        assert counts["accepted"] == 1 and counts["samples"] == 2, (index, reg.outcomes("t", "rejected"))
        resumed = [json.loads(body) for _, body in reg.samples("t")]
        assert [s["messages"] for s in resumed] == [s["messages"] for s in samples]  # the same samples
        assert counts["llm_calls"] == total, (index, counts["llm_calls"], total)
        redone.append(len(again.calls))
    # a later cut never redoes more, and the last ones redo at most the final call
    assert redone == sorted(redone, reverse=True) and redone[-1] <= 1, redone


def test_web_actions_must_follow_the_action_grammar():
    from teachgraph.nodes.checks import web_actions
    page = {"content": '[1] link "Home"\n[2] textbox "Search"'}
    assert web_actions(page, {"actions": 'type [2] "shoes"\nclick [1]'}).ok
    assert web_actions(page, {"actions": 'answer "impossible: no checkout on this page"'}).ok
    assert not web_actions(page, {"actions": "I cannot answer this"}).ok
    assert not web_actions(page, {"actions": "click [7]"}).ok


def test_tool_calls_must_use_tools_the_sample_offers():
    from teachgraph.nodes.checks import tool_arguments
    from tests.flow_script import APIS
    item = {"apis": APIS, "tools": ["get_forecast"]}   # get_weather was taken away
    hidden = {"action": "call_tools", "calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]}
    assert "not one of the tools given" in tool_arguments(item, hidden).feedback
    missing = {"action": "call_tools", "calls": [{"name": "get_forecast", "arguments": '{"days": 2}'}]}
    assert "missing required ['city']" in tool_arguments(item, missing).feedback
    assert tool_arguments(item, {"action": "call_tools", "calls": [
        {"name": "get_forecast", "arguments": '{"city": "Paris", "days": 2}'}]}).ok

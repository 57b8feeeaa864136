"""The LLM judge is a check with a model handle (--judge-model, on its own endpoint if need be): a rubric
per skill as data, a threshold in skill.toml; its verdict and reason go into the sample's metadata;
below the threshold the answer is dropped with the judge's reason; malformed verdicts are a reason,
not a crash. In `filter` the same judge is a gate."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

import teachgraph
from teachgraph import skills
from teachgraph.api import filter_samples
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.llm import LLM
from teachgraph.mix import Dealer
from teachgraph.runner import Home, LocalExecutor, Settings
from teachgraph.seeds import collect
from teachgraph.testing.fake_chat import ScriptedChatModel
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.conftest import SAMPLE, Tally, run_cli
from tests.flow_script import FlowScript, SchemaChatModel
from tests.rag_script import RagScript
from tests.test_skills import corpus  # noqa: F401  (a fixture)

JUDGE_PROMPT = "You review training data"


class Judge:
    """The judge model's replies: `score` for every answer, or `raw` text (malformed output)."""

    def __init__(self, score: int | None = 8, raw: str | None = None, by_content: dict[str, int] | None = None):
        self.score, self.raw, self.by_content = score, raw, by_content or {}
        self.prompts: list[tuple[str, str]] = []

    def __call__(self, system: str, user: str) -> str:
        assert system.startswith(JUDGE_PROMPT), system[:80]
        self.prompts.append((system, user))
        if self.raw is not None:
            return self.raw
        score = next((s for word, s in self.by_content.items() if word in user), self.score)
        return json.dumps({"score": score, "reason": f"the answer deserves {score}"})

    def http_responder(self, body: dict) -> str:
        messages = body["messages"]
        return self(messages[0]["content"], messages[-1]["content"])


def judge_llm(judge: Judge) -> LLM:
    return LLM(chat=ScriptedChatModel(script=judge), model_name="judge-fake", structured_mode="json_object")


def run_judged(tmp_path: Path, corpus: Path, skill_name: str, judge: Judge):  # noqa: F811
    skill = skills.load(skill_name)
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    settings = Settings(skill=skill.name, seeds=[str(corpus)], out=str(home.default_out("t")), rounds=0,
                        concurrency=2, model="fake")
    registry.create_run("t", skill.name, settings.to_json())
    registry.add_corpus("t", collect([corpus]), limit=None, assign=Dealer([skill]), passage_chars=420)
    script = FlowScript()
    llm = LLM(chat=SchemaChatModel(script=script), model_name="fake", structured_mode="json_object")
    llm.judge = judge_llm(judge)
    asyncio.run(LocalExecutor(registry, home, "t", skill, llm, settings, Tally()).run())
    return registry, [json.loads(body) for _, body in registry.samples("t")], script


def test_a_high_score_keeps_the_sample_with_the_verdict_in_its_metadata(tmp_path, corpus):  # noqa: F811
    judge = Judge(score=8)
    registry, samples, script = run_judged(tmp_path, corpus, "open_domain_qa", judge)
    counts = registry.counts("t")
    assert counts["accepted"] == 2 and len(samples) == 2
    for sample in samples:
        [verdict] = sample["metadata"]["checks"]
        assert verdict == {"check": "judge", "ok": True, "detail": "scored 8/10 (threshold 6): the answer deserves 8",
                           "score": 8, "reason": "the answer deserves 8", "threshold": 6, "judge_model": "judge-fake"}
    assert counts["llm_calls"] == len(script.calls) + len(judge.prompts)   # the judge's calls count too
    system, user = judge.prompts[0]
    assert skills.load("open_domain_qa").title in system and "TASK:" in user and "ANSWER:" in user


def test_a_low_score_drops_the_answer_with_the_judge_s_reason(tmp_path, corpus):  # noqa: F811
    judge = Judge(score=3)
    registry, samples, _ = run_judged(tmp_path, corpus, "open_domain_qa", judge)
    assert samples == []
    [outcome] = registry.outcomes("t", "rejected")
    assert outcome["node"] == "answer" and outcome["seeds"] == 2
    assert outcome["reason"] == ("check judge failed: a reviewer scored 3/10 (threshold 6): the answer deserves 3")
    assert len(judge.prompts) == 4   # the reason went back to the answer agent once, then the judge said no again


def test_malformed_judge_output_is_a_clear_reason_not_a_crash(tmp_path, corpus):  # noqa: F811
    registry, samples, _ = run_judged(tmp_path, corpus, "open_domain_qa", Judge(raw="I think it is fine!"))
    assert samples == [] and registry.counts("t")["failed"] == 0
    [outcome] = registry.outcomes("t", "rejected")
    assert outcome["reason"].startswith("check judge failed: the judge gave no usable verdict: JudgeReply: ")
    out_of_range = run_judged(tmp_path / "2", corpus, "open_domain_qa", Judge(score=42))[0]
    [outcome] = out_of_range.outcomes("t", "rejected")
    assert "no usable verdict" in outcome["reason"] and "score" in outcome["reason"]


def test_the_skill_s_threshold_and_rubric_decide(tmp_path, corpus, monkeypatch):  # noqa: F811
    folder = tmp_path / "skills"
    shutil.copytree(skills.SKILLS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(skills, "SKILLS_DIR", folder)
    toml = folder / "open_domain_qa" / "skill.toml"
    toml.write_text(toml.read_text() + "\n[judge]\nthreshold = 9\n")
    (folder / "open_domain_qa" / "rubric.toml").write_text('criteria = ["Mentions the weather in Paris."]\n')
    judge = Judge(score=8)
    registry, samples, _ = run_judged(tmp_path, corpus, "open_domain_qa", judge)
    assert samples == [] and "scored 8/10 (threshold 9)" in registry.outcomes("t", "rejected")[0]["reason"]
    assert "- Mentions the weather in Paris." in judge.prompts[0][0]
    toml.write_text(toml.read_text().replace("threshold = 9", "threshold = 11"))
    with pytest.raises(skills.SkillError, match=r"skill.toml: judge.threshold: Input should be less than or equal"):
        skills.load("open_domain_qa")
    toml.write_text(toml.read_text().replace("threshold = 11", "threshold = 5"))
    (folder / "open_domain_qa" / "rubric.toml").write_text('criteria = ["x"]\nscal = "1-10"\n')
    with pytest.raises(skills.SkillError, match=r"rubric.toml: unknown key 'scal'$"):
        skills.load("open_domain_qa")


def test_rag_answers_are_judged_too(tmp_path):
    llm = LLM(chat=ScriptedChatModel(script=RagScript().reply, turn="first"),
              model_name="scripted", structured_mode="json_object")
    llm.judge = judge_llm(Judge(score=2))
    run = teachgraph.run("rag", [SAMPLE], limit=2, rounds=0, model="scripted", home=tmp_path / "home",
                         run_id="low", llm=llm)
    assert run.counts["accepted"] == 0 and run.counts["rejected"] == 2
    assert all(o["reason"].startswith("check judge failed: a reviewer scored 2/10")
               for o in run.registry.outcomes("low", "rejected"))
    llm.judge = judge_llm(Judge(score=9))
    run = teachgraph.run("rag", [SAMPLE], limit=2, rounds=0, model="scripted", home=tmp_path / "home",
                         run_id="high", llm=llm)
    samples = list(run.samples())
    assert samples and all(s["metadata"]["checks"][0]["score"] == 9 for s in samples)


def test_graph_run_asks_a_judge_on_its_own_endpoint_in_the_response_mode(tmp_path):
    """Two fake servers: the generator's and the judge's. --structured json_object (what llama.cpp's
    server takes): the judge's request carries response_format json_object with its schema."""
    judge = Judge(score=7)
    with FakeOpenAI(responder=FlowScript().http_responder) as generator, \
            FakeOpenAI(responder=judge.http_responder) as judging:
        run = teachgraph.run("open_domain_qa", [SAMPLE], limit=2, rounds=0, base_url=generator.base_url,
                             model="gen", structured="json_object", home=tmp_path / "home", run_id="j",
                             judge_model="judge-m", judge_base_url=judging.base_url)
        judge_bodies = list(judging.requests)
        generator_bodies = list(generator.requests)
    assert run.counts["accepted"] == 2
    assert judge_bodies and all(b["model"] == "judge-m" and b["temperature"] == 0 for b in judge_bodies)
    fmt = judge_bodies[0]["response_format"]
    assert fmt["type"] == "json_object" and set(fmt["schema"]["properties"]) == {"score", "reason"}
    assert not any(JUDGE_PROMPT in json.dumps(b) for b in generator_bodies)
    assert {s["metadata"]["checks"][0]["judge_model"] for s in run.samples()} == {"judge-m"}
    assert run.settings.judge_model == "judge-m" and run.settings.judge_base_url == judging.base_url


def test_filter_judges_rows_with_their_skill_s_rubric(tmp_path):
    rows = [{"id": "good", "skill": "reading_comprehension",
             "messages": [{"role": "user", "content": "Passage.\n\nQuestion?"},
                          {"role": "assistant", "content": "A careful answer. GOOD"}]},
            {"id": "bad", "skill": "reading_comprehension",
             "messages": [{"role": "user", "content": "Passage.\n\nQuestion?"},
                          {"role": "assistant", "content": "A careless answer. BAD"}]},
            {"id": "orca-row", "messages": json.dumps([{"role": "user", "content": "Task"},
                                                       {"role": "assistant", "content": "Reply. GOOD"}])}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = Judge(by_content={"GOOD": 9, "BAD": 2})
    with FakeOpenAI(responder=judge.http_responder) as judging:
        counts = filter_samples(source, tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl", judge_model="j",
                                judge_base_url=judging.base_url, structured="json_object", home=tmp_path / "home")
    kept = [json.loads(line)["id"] for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    [rejected] = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert kept == ["good", "orca-row"] and counts.dropped == {"judge": 1}
    assert rejected["id"] == "bad" and rejected["rejection"] == {
        "gate": "judge", "reason": "scored 2/10 (threshold 6): the answer deserves 2", "duplicate_of": None}
    rc_rubric = skills.rubric_for("reading_comprehension").criteria[0]
    shared = skills.rubric_for(None).criteria[0]
    assert rc_rubric in judge.prompts[0][0] and shared in judge.prompts[2][0]   # the orca row: the shared rubric


def test_filter_with_a_malformed_judge_rejects_with_the_reason(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "T"},
                                                          {"role": "assistant", "content": "R"}]}) + "\n")
    with FakeOpenAI(responder=Judge(raw="{not json").http_responder) as judging:
        counts = filter_samples(source, tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl", judge_model="j",
                                judge_base_url=judging.base_url, structured="json_object", home=tmp_path / "home")
    [row] = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert counts.kept == 0 and row["rejection"]["gate"] == "judge"
    assert row["rejection"]["reason"].startswith("the judge gave no usable verdict: JudgeReply: ")


def test_the_cli_takes_the_judge_options(tmp_path):
    done = run_cli("graph", "run", "rag", "--judge-base-url", "http://127.0.0.1:9/v1", home=tmp_path / "home")
    assert done.returncode == 2 and "--judge-base-url goes with --judge-model" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_tool_use_is_judged_on_its_final_reply_not_on_its_tool_calls(tmp_path, corpus):  # noqa: F811
    judge = Judge(score=8)
    registry, samples, _ = run_judged(tmp_path, corpus, "tool_use", judge)
    assert samples and judge.prompts
    assert not any("call_tools" in user for _, user in judge.prompts)    # only replies to the user are scored
    for sample in samples:
        records = [c for c in sample["metadata"]["checks"] if c["check"] == "judge"]
        assert records[0]["detail"] == "tool calls: the final reply is judged" and records[-1]["score"] == 8

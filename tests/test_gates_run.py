"""The quality gates inside `graph run` (teachgraph/gates/run.py, nodes/gates.py): planted defects in a
scripted run's samples are dropped with (gate, reason, duplicate_of) and recorded, the rest kept;
--dedup-against; seed dedup at collection; skill.toml [gates] checked at load; and the gate index
across a real kill -9 and resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.cli import app
from teachgraph.gates import filter_file
from teachgraph.gates.run import RunFlags, chosen
from teachgraph.gates.store import GateStore
from teachgraph.skills import SkillError
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.conftest import ROOT, SAMPLE, run_cli, run_in_process
from tests.flow_script import FlowScript
from tests.rag_script import RagScript, agent_of

BENCHMARK = ("the ancient lighthouse keeper counted exactly forty seven ships passing the northern cape "
             "during the winter storm")


def bucket(text: str, n: int) -> int:
    return hashlib.sha256(text.encode("utf-8")).digest()[0] % n


@dataclasses.dataclass
class PlantedRag(RagScript):
    """RagScript whose answers carry planted defects, chosen by the prompt (so a resume replays them):
    a runaway repetition, or a sentence of an evaluation set."""

    def reply(self, system: str, user: str) -> str:
        if agent_of(system, user) == "answer":
            kind = self.defect(user)
            if kind:
                ids = [int(i) for i in re.findall(r"Document Id: (\d+)", user)]
                text = "the same words again and again " * 30 if kind == "degenerate" else f"Indeed, {BENCHMARK}."
                return json.dumps({"answer": text, "relevant_passages": ids[:1]})
        return super().reply(system, user)

    @staticmethod
    def defect(user: str) -> str | None:
        """By the item's query, which the answer agent's prompt and the sample's user turn both hold."""
        query = re.search(r"^Query: (.*)$", user, re.M)
        return {0: "degenerate", 1: "decontaminate"}.get(bucket(query.group(1) if query else user, 4))


def user_turn(sample: dict) -> str:
    return next(m["content"] for m in sample["messages"] if m["role"] == "user")


def test_planted_defects_are_dropped_recorded_and_counted(tmp_path, monkeypatch):
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"id": "q7", "question": "Who counted the ships?", "answer": BENCHMARK}) + "\n")
    registry, settings, _ = run_in_process(tmp_path, PlantedRag().reply, limit=6, rounds=1, concurrency=1,
                                           decontaminate=[evals])
    assert settings.gates and settings.decontaminate == [str(evals.resolve())]
    kept = [json.loads(body) for _, body in registry.samples("t1")]
    dropped = list(registry.dropped_samples("t1"))
    produced = kept + [json.loads(r["body"]) for r in dropped]
    planted = {s["id"]: PlantedRag.defect(user_turn(s)) for s in produced}
    assert sum(1 for k in planted.values() if k) >= 2 and sum(1 for k in planted.values() if not k) >= 2
    found = {r["sample_id"]: r["gate"] for r in dropped}
    true_drops = sum(1 for i, gate in found.items() if planted[i] == gate)
    precision = true_drops / len(found)
    recall = true_drops / sum(1 for k in planted.values() if k)
    print(f"\ngates in a run: {len(produced)} samples, {len(found)} dropped; precision {precision:.3f}, "
          f"recall {recall:.3f}")
    assert precision == 1.0 and recall == 1.0
    for r in dropped:
        if r["gate"] == "decontaminate":
            assert r["duplicate_of"] == "eval.jsonl:q7" and "lighthouse keeper" in r["reason"]
        else:
            assert r["duplicate_of"] is None and "repetition" in r["reason"]
    # the verdicts are in each sample's lineage (export reads metadata.gates); rag's skill.toml adds grounding
    for s in kept:
        assert [(g["gate"], g["verdict"]) for g in s["metadata"]["gates"]] == [
            ("degenerate", "pass"), ("decontaminate", "pass"), ("grounding", "pass"), ("exact_duplicate", "pass"),
            ("near_duplicate", "pass")]
    for r in dropped:
        assert json.loads(r["body"])["metadata"]["gates"] == [{"gate": r["gate"], "verdict": "reject",
                                                               "reason": r["reason"]}]
    # a seed whose every sample was dropped is rejected with the gate's reason; the others accepted
    by_seed: dict[str, list[str]] = {}
    for s in produced:
        by_seed.setdefault(s["metadata"]["seed_id"], []).append(s["id"])
    for seed_id, ids in by_seed.items():
        seed = registry.seed("t1", seed_id)
        if all(i in found for i in ids):
            assert seed["status"] == "rejected" and seed["node"] == "gate"
            assert seed["reason"].startswith(f"{found[ids[0]]}: ")
        else:
            assert seed["status"] == "accepted" and seed["samples"] == sum(i not in found for i in ids)
    # the output file holds exactly the kept samples
    written = [json.loads(line)["id"] for line in open(settings.out)]
    assert sorted(written) == sorted(s["id"] for s in kept)
    assert registry.counts("t1")["dropped_samples"] == len(found)
    assert sum(registry.gate_counts("t1").values()) == len(found)
    assert sum(r["samples"] for r in registry.rejections("t1", samples=True)) == len(found)

    monkeypatch.setenv("TEACHGRAPH_HOME", str(tmp_path / "home"))
    cli = CliRunner()   # in this process: a CLI process takes ~15 s to start on the shared cores
    shown = json.loads(cli.invoke(app, ["runs", "show", "t1", "--json"]).stdout)
    assert shown["gates"]["dropped"] == registry.gate_counts("t1")
    assert shown["counts"]["dropped_samples"] == len(found)
    listed = cli.invoke(app, ["runs", "failures", "t1", "--json"]).stdout.splitlines()
    rows = [json.loads(line) for line in listed if line.startswith("{")]
    assert sorted(r["sample_id"] for r in rows if r["status"] == "dropped") == sorted(found)
    assert all(r["gate"] == found[r["sample_id"]] for r in rows if r["status"] == "dropped")
    human = cli.invoke(app, ["runs", "show", "t1"]).stdout
    assert f"samples dropped by gates {len(found)}" in human
    assert "decontaminate eval.jsonl" in human


def test_dedup_against_an_earlier_run_names_its_samples(tmp_path):
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=3, rounds=1, run_id="first")
    first = {sid for sid, _ in registry.samples("first")}
    assert first
    # the same seeds and model again: every sample repeats one of the first run's
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=3, rounds=1, run_id="second",
                                    dedup_against=["first"])
    dropped = list(registry.dropped_samples("second"))
    assert not list(registry.samples("second"))
    assert {r["duplicate_of"] for r in dropped} == first
    assert all(r["duplicate_of"] == r["sample_id"].replace("second:", "first:", 1) for r in dropped)
    assert {r["gate"] for r in dropped} == {"exact_duplicate"}
    # without it, the same second run keeps them all
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, limit=3, rounds=1, run_id="third")
    assert len(list(registry.samples("third"))) == len(first)


def test_a_missing_dedup_against_run_or_eval_file_is_refused_before_the_run(tmp_path):
    from teachgraph.errors import UsageError
    with pytest.raises(UsageError, match="--dedup-against nope: no such run"):
        run_in_process(tmp_path, RagScript().reply, dedup_against=["nope"])
    with pytest.raises(UsageError, match="no such file"):
        run_in_process(tmp_path, RagScript().reply, decontaminate=[tmp_path / "missing.jsonl"])
    assert not Registry(tmp_path / "home" / "runs.db").runs()


def test_duplicate_seed_chunks_are_skipped_naming_the_chunk_they_repeat(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    readme = (SAMPLE / "sqlite_utils_README.md").read_text()
    zen = (SAMPLE / "zen_of_python.txt").read_text()
    (corpus / "a_readme.md").write_text(readme)
    (corpus / "b_readme_saved_again.md").write_text(readme)                        # the same page twice
    (corpus / "c_mirror.md").write_text(readme.replace("sqlite-utils", "sqlite_utils", 1) + "\nMirrored.\n")
    (corpus / "d_zen.txt").write_text(zen)
    (corpus / "e_zen_quoted.txt").write_text("Notes on style.\n\n" + zen.splitlines()[2] + "\n\n" +
                                             (SAMPLE / "python_try_statement.txt").read_text())
    registry, _, _ = run_in_process(tmp_path, RagScript().reply, seeds=corpus, limit=None, rounds=0)
    seeds = list(registry.db.query("select id, source, chunk from seeds where run_id = 't1'"))
    by_source: dict[str, list[str]] = {}
    for s in seeds:
        by_source.setdefault(os.path.basename(s["source"]), []).append(s["id"])
    skipped = registry.skipped("t1")
    assert set(by_source) == {"a_readme.md", "d_zen.txt", "e_zen_quoted.txt"}
    readme_ids = set(by_source["a_readme.md"])
    dup = [s for s in skipped if s["duplicate_of"]]
    assert {s["source"].split(" (chunk")[0].rsplit("/", 1)[-1] for s in dup} == {"b_readme_saved_again.md",
                                                                                  "c_mirror.md"}
    assert {s["duplicate_of"] for s in dup} <= readme_ids
    assert len(dup) == 2 * len(readme_ids)
    assert all("duplicate seed" in s["reason"] for s in dup)


def test_skill_toml_gates_table_is_checked_when_the_skill_loads(tmp_path):
    skill = skills.load("open_domain_qa")
    ok = dataclasses.replace(skill, spec=skill.spec.model_copy(update={"gates": {
        "near_duplicate": {"threshold": 0.7}, "semantic_duplicate": False}}))
    skills.check_gates(ok)
    for gates, problem in [({"near_dupe": True}, "unknown gate 'near_dupe'"),
                           ({"near_duplicate": {"treshold": 0.7}}, "near_duplicate.treshold: unknown key"),
                           ({"degenerate": {"echo_share": "high"}}, "degenerate.echo_share")]:
        bad = dataclasses.replace(skill, spec=skill.spec.model_copy(update={"gates": gates}))
        with pytest.raises(SkillError, match=problem):
            skills.check_gates(bad)
    toml = tmp_path / "skill.toml"
    toml.write_text('name = "x"\ntitle = "x"\nsplit = "x"\ngraph = "teachgraph.graphs.flow:build"\n'
                    '[gates]\ndegenerate = "yes"\n')
    with pytest.raises(SkillError, match="gates.degenerate"):
        skills.load_spec(toml, "x")


def test_which_gates_run_from_skill_table_and_run_flags():
    assert list(chosen({}, RunFlags())) == ["degenerate", "exact_duplicate", "near_duplicate"]
    assert chosen({}, RunFlags(enabled=False)) == {}
    assert list(chosen({"near_duplicate": False}, RunFlags(semantic=True))) == [
        "degenerate", "exact_duplicate", "semantic_duplicate"]
    picked = chosen({"near_duplicate": {"threshold": 0.8}}, RunFlags(decontaminate=("e.jsonl",)))
    assert list(picked) == ["degenerate", "decontaminate", "exact_duplicate", "near_duplicate"]
    assert picked["near_duplicate"] == {"threshold": 0.8} and [str(p) for p in picked["decontaminate"]["files"]] == [
        "e.jsonl"]


def test_the_planted_file_through_a_runs_gates_in_seed_batches(tmp_path):
    """tests/planted.py's 414 rows (113 defects of every kind, 199 same-passage-different-question rows
    that must stay) through RunGates as a run feeds them: two samples a seed, judged and admitted
    per seed. Same gates as `filter`, so the same precision and recall."""
    from teachgraph.gates.run import RunGates
    from tests.planted import planted
    rows, evals = planted()
    eval_file = tmp_path / "evals.jsonl"
    eval_file.write_text("".join(json.dumps(e) + "\n" for e in evals))
    gates = RunGates.open(GateStore(tmp_path / "gates.db"), RunFlags(decontaminate=(str(eval_file),)))
    pipeline = gates.pipeline("any", {})
    started = time.perf_counter()
    verdicts = []
    for i in range(0, len(rows), 2):
        verdicts += gates.judge_seed(pipeline, [r.sample for r in rows[i:i + 2]])
    seconds = time.perf_counter() - started
    gates.close()
    print(f"\n{len(rows)} planted rows through a run's gates: {1000 * seconds / len(rows):.1f} ms a sample")
    for gate in ("degenerate", "decontaminate", "exact_duplicate", "near_duplicate"):
        planted_here = {r.sample["id"] for r in rows if r.expect == gate}
        dropped = {r.sample["id"] for r, v in zip(rows, verdicts) if v.gate == gate}
        precision = len(planted_here & dropped) / max(1, len(dropped))
        recall = len(planted_here & dropped) / len(planted_here)
        print(f"  {gate:<16} planted {len(planted_here):>3}  dropped {len(dropped):>3}  precision {precision:.3f}  "
              f"recall {recall:.3f}")
        assert precision >= 0.98 and recall >= 0.95
    assert all(v.keep for r, v in zip(rows, verdicts) if r.expect is None)   # every clean row stays
    for r, v in zip(rows, verdicts):
        if r.duplicate_of and not v.keep:
            assert v.duplicate_of == r.duplicate_of


# ---- kill -9 and resume ----

def test_a_seed_judged_again_after_a_kill_is_not_its_own_duplicate(tmp_path):
    """The gate node commits what it admitted before LangGraph checkpoints its output: a kill in between
    reruns the node on resume, which must keep the same samples, not drop them as copies of themselves."""
    from teachgraph.gates.run import RunGates
    from tests.planted import chat
    gates = RunGates.open(GateStore(tmp_path / "gates.db"), RunFlags())
    pipeline = gates.pipeline("rag", {})
    one = chat("r:s1:r0", "What does the harbor lantern signal to ships?", "It warns them of the rocks nearby.")
    two = chat("r:s1:r1", "Why is the orchard compass kept in velvet?", "Velvet keeps the brass from scratches.")
    assert [v.keep for v in gates.judge_seed(pipeline, [one, two])] == [True, True]
    gates.close()
    gates = RunGates.open(GateStore(tmp_path / "gates.db"), RunFlags())        # the resumed process
    pipeline = gates.pipeline("rag", {})
    assert [v.keep for v in gates.judge_seed(pipeline, [one, two])] == [True, True]
    copy = {**one, "id": "r:s2:r0"}
    (verdict,) = gates.judge_seed(pipeline, [copy])
    assert (verdict.keep, verdict.gate, verdict.duplicate_of) == (False, "exact_duplicate", "r:s1:r0")
    rows = gates.store.db.execute("select count(*) from gate_near_duplicate_kept").fetchone()[0]
    assert rows == 2                                                    # admitted once each
    gates.close()


QUESTIONS = ["Which river flows through the old town of Heidelberg in Germany?",
             "How many strings does a standard concert violin have, and why?",
             "What metal is the Statue of Liberty's outer skin made of?"]


@dataclasses.dataclass
class RepeatedQuestions(FlowScript):
    """open_domain_qa's generate step asks one of three questions, chosen by the prompt: seeds that
    draw the same one get the same answer (FlowScript answers by the prompt), i.e. duplicate samples."""

    def reply(self, system: str, user: str, schema: dict) -> str:
        if set(schema.get("properties", {})) == {"question"}:
            return json.dumps({"question": QUESTIONS[bucket(user, len(QUESTIONS))]})
        return super().reply(system, user, schema)


def _args(fake, run_id: str) -> list[str]:
    return ["graph", "run", "open_domain_qa", "--seeds", str(SAMPLE), "--limit", "10", "--rounds", "0",
            "--concurrency", "1", "--run-id", run_id, "--base-url", fake.base_url, "--model", "fake-model",
            "--structured", "json_schema", "--no-cache"]


def _outcome(home, run_id):
    registry = Registry(home / "runs.db")
    kept = [json.loads(body) for _, body in registry.samples(run_id)]
    return registry, kept, list(registry.dropped_samples(run_id))


@pytest.mark.slow
def test_gate_index_survives_kill_9_and_resume(tmp_path):
    with FakeOpenAI(responder=RepeatedQuestions().http_responder) as fake:
        base = run_cli(*_args(fake, "base"), home=tmp_path / "base")
        assert base.returncode == 0, base.stderr
    _, base_kept, base_dropped = _outcome(tmp_path / "base", "base")
    assert len(base_dropped) >= 3 and {r["gate"] for r in base_dropped} == {"exact_duplicate"}

    home = tmp_path / "killed"
    with FakeOpenAI(responder=RepeatedQuestions().http_responder, delay=0.05) as fake:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *_args(fake, "k")], cwd=ROOT,
                                env={**os.environ, "TEACHGRAPH_HOME": str(home), "OPENAI_BASE_URL": ""},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        at_kill: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            if (home / "runs.db").exists():
                try:
                    registry = Registry(home / "runs.db")
                    at_kill = registry.counts("k") if registry.run("k") else {}
                except Exception:   # the run is creating the file
                    at_kill = {}
                if at_kill.get("dropped_samples", 0) >= 1 and at_kill.get("pending", 0) >= 3:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        registry, kept_before, dropped_before = _outcome(home, "k")
        assert kept_before and dropped_before, "the kill came too early to test anything"
        assert registry.counts("k")["pending"] >= 3, "the kill came too late to test anything"
        resumed = run_cli("graph", "resume", "k", home=home)
        assert resumed.returncode == 0, resumed.stderr

    registry, kept, dropped = _outcome(home, "k")
    counts = registry.counts("k")
    assert counts["pending"] == 0 and counts["failed"] == 0
    kept_ids = [s["id"] for s in kept]
    dropped_ids = [r["sample_id"] for r in dropped]
    assert len(set(dropped_ids)) == len(dropped_ids)                   # nothing rejected twice
    assert not set(kept_ids) & set(dropped_ids)
    # the same samples kept and dropped as the uninterrupted run (seeds run in order: concurrency 1)
    rename = lambda i: i.replace("base:", "k:", 1)  # noqa: E731
    assert sorted(kept_ids) == sorted(rename(s["id"]) for s in base_kept)
    assert sorted((r["sample_id"], r["duplicate_of"]) for r in dropped) == sorted(
        (rename(r["sample_id"]), rename(r["duplicate_of"])) for r in base_dropped)
    # some drops after the resume point at samples kept before the kill: the index was kept
    before = {s["id"] for s in kept_before}
    after = [r for r in dropped if r["sample_id"] not in {d["sample_id"] for d in dropped_before}]
    assert any(r["duplicate_of"] in before for r in after)
    print(f"\nkill -9 with {len(kept_before)} kept, {len(dropped_before)} dropped; after resume {len(kept)} kept, "
          f"{len(dropped)} dropped ({sum(r['duplicate_of'] in before for r in after)} of the later drops repeat "
          f"a sample kept before the kill)")
    # no duplicate slipped through: the gates over the output file drop nothing
    out = home / "runs" / "k" / "samples.jsonl"
    counts = filter_file(out, tmp_path / "refiltered.jsonl")
    assert counts.rows == len(kept) and not counts.dropped

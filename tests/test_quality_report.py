"""The quality report (`report RUN_ID [--html FILE]`, teachgraph/quality.py): its figures on texts whose
answers are known by hand, and the whole report on a planted run (coverage, drops by stage and reason,
near-duplicates, refinement), in Markdown, in offline HTML and from the CLI."""

from __future__ import annotations

import json
import re

import pytest

import teachgraph
from teachgraph import quality, skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.runner import Home, Settings
from teachgraph.seeds import Chunk
from tests.conftest import run_cli


def test_distinct_n_on_a_known_set():
    texts = [["a", "b", "a", "b"], ["a", "c"]]
    assert quality.distinct_n(texts, 1) == 3 / 6       # a b c of 6 words
    assert quality.distinct_n(texts, 2) == 3 / 4       # (a b) (b a) (a c) of 4 bigrams
    assert quality.distinct_n([["a"]], 2) is None


def test_self_bleu_is_one_for_copies_and_near_zero_for_disjoint_texts():
    same = [["the", "cat", "sat", "on", "the", "mat"]] * 3
    assert quality.self_bleu(same) == pytest.approx(1.0)
    disjoint = [[f"w{k}{i}" for i in range(8)] for k in range(4)]
    assert quality.self_bleu(disjoint) < 0.01
    half = [["a", "b", "c", "d", "e", "f"], ["a", "b", "c", "d", "x", "y"]]
    assert 0.01 < quality.self_bleu(half) < 1
    assert quality.self_bleu([["only", "one"]]) is None


def test_word_edit_distance():
    assert quality.edit_distance(["what", "is", "alpha"], ["what", "is", "alpha", "and", "beta"]) == 2
    assert quality.edit_distance(["a", "b", "c"], ["a", "x", "c"]) == 1


@pytest.mark.slow
def test_dispersion_with_the_semantic_encoder():
    pytest.importorskip("sentence_transformers")
    assert quality.dispersion(["The cat sat on the mat."] * 3) == pytest.approx(0.0, abs=1e-5)
    spread = quality.dispersion(["The cat sat on the mat.", "Quarterly revenue rose by 4 percent.",
                                 "Compile the kernel with debug symbols."])
    assert spread > 0.5


# ---- a planted run ----

def chat(run_id: str, seed: str, round: int, instruction: str, response: str, task_type: str, **meta) -> dict:
    return {"id": f"{run_id}:{seed}:r{round}", "skill": "mcq",
            "messages": [{"role": "system", "content": ""}, {"role": "user", "content": instruction},
                         {"role": "assistant", "content": response}],
            "metadata": {"seed_id": seed, "seed_source": "planted", "task_type": task_type,
                         "refinement_round": round, "parent_sample_id": None, "refinements": [], **meta}}


@pytest.fixture
def planted(tmp_path):
    """An mcq run with known outcomes: 7 seeds over 5 task types (3 with kept samples), one exact copy,
    one refined item 2 words away from its seed item, a sample a check rejected, a rejected seed whose
    reason holds markup, a failed seed, a seed --target left unused."""
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    t = [task.name for task in skills.load("mcq").taxonomy]
    settings = Settings(skill="mcq", seeds=["planted"], out=str(home.default_out("p")), model="fake")
    registry.create_run("p", "mcq", settings.to_json())
    plan = {"s0": t[0], "s1": t[0], "s2": t[1], "s3": t[2], "s4": t[3], "s5": t[4], "s6": t[1]}
    chunks = [Chunk(id=seed, source="planted", index=n, title=seed, text=f"text of {seed} " * 30, kind="text")
              for n, seed in enumerate(plan)]
    registry.add_corpus("p", chunks, limit=None, passage_chars=420,
                        assign=lambda seed_id, kind: ("mcq", "identity", plan[seed_id]))
    a = chat("p", "s0", 0, "what is alpha", "alpha is one", t[0])
    b = chat("p", "s0", 2, "what is alpha and beta", "alpha is one beta two", t[0], parent_sample_id=a["id"],
             refinements=[{"round": 1, "operation": "harder"}, {"round": 2, "operation": "harder"}])
    registry.finish_seed("p", "s0", status="accepted", samples=[a, b])
    registry.finish_seed("p", "s1", status="accepted", samples=[chat("p", "s1", 0, "what is alpha", "alpha is one",
                                                                     t[0])])
    registry.finish_seed("p", "s2", status="accepted", samples=[chat("p", "s2", 0, "name the gamma",
                                                                     "gamma is three", t[1])],
                         reason="answer: refined item unusable")
    registry.finish_seed("p", "s3", status="accepted", samples=[chat(
        "p", "s3", 0, "name the delta", "delta is four", t[2],
        checks=[{"check": "answer_key", "ok": False, "detail": "the key says C"}])])
    registry.finish_seed("p", "s4", status="rejected", node="answer", reason="check failed: <script>alert(1)</script>")
    registry.finish_seed("p", "s5", status="failed", node="generate", error="TimeoutError: 120 s")
    registry.finish_seed("p", "s6", status="rejected", node=quality.TARGET_NODE, reason="its task types were full")
    return home, t


def test_the_report_of_a_planted_run(planted):
    home, t = planted
    report = teachgraph.report("p", home=home.root, semantic=False)
    (mcq,) = report.skills
    assert mcq.skill == "mcq" and len(mcq.taxonomy) == len(t)
    rows = mcq.types
    assert (rows[t[0]].seeds, rows[t[0]].accepted, rows[t[0]].kept) == (2, 2, 3)
    assert (rows[t[1]].seeds, rows[t[1]].kept, rows[t[1]].unused, rows[t[1]].rejected) == (2, 1, 1, 0)
    assert (rows[t[2]].kept, rows[t[2]].dropped_samples) == (0, 1)         # its one sample failed a check
    assert rows[t[3]].rejected == 1 and rows[t[4]].failed == 1
    assert mcq.covered == 2                                                  # t0 and t1 have kept samples
    drops = {(d.task_type, d.stage, d.by): d.reason for d in mcq.drops}
    assert drops[(t[3], "seed rejected", "answer")] == "check failed: <script>alert(1)</script>"
    assert drops[(t[4], "seed failed", "generate")] == "TimeoutError: 120 s"
    assert drops[(t[2], "sample", "check answer_key")] == "the key says C"
    assert drops[(t[1], "refined", "answer")] == "answer: refined item unusable"
    assert not any(d.by == quality.TARGET_NODE for d in mcq.drops)          # unused is no rejection

    # figures over the 4 kept samples: a, its refinement b, the copy of a, and s2's
    assert mcq.samples == 4 and mcq.seed_items == 3
    assert mcq.responses.distinct_1 == 7 / 14 and mcq.responses.distinct_2 == 6 / 10
    assert mcq.instructions.distinct_1 == 8 / 14       # what is alpha / + and beta / what is alpha / name the gamma
    assert mcq.responses.lengths == [3, 5, 3, 3]
    assert mcq.near_duplicates == 1                    # s1's sample copies s0's
    assert mcq.refined == 1 and mcq.edit_distances == [2] and mcq.relative_edits == [2 / 5]
    assert mcq.operations == {"harder": 2}
    assert 0 < mcq.responses.self_bleu < 1 and mcq.responses.dispersion is None

    text = quality.markdown(report)
    assert text.startswith("# Quality report: p\n")
    assert f"| {t[0]} | 2 | 2 | 3 | 0 | 0 | 0 |" in text
    assert "2 of 11 task types have a kept sample" in text
    assert "near-duplicates among the kept samples (exact + MinHash gates, measured now): 1 of 4 samples (25%)" in text
    assert "refined: 1 of 3 seed items (33%)" in text and "mean 2.0" in text

    page = quality.html(report)
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)   # nothing fetched: works offline
    assert "<table>" in page


def test_report_from_the_cli_writes_offline_html(planted, tmp_path):
    home, t = planted
    out = tmp_path / "made" / "report.html"
    done = run_cli("report", "p", "--html", str(out), "--no-semantic", home=home.root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Quality report: p") and "## mcq" in done.stdout
    assert out.read_text().count("<svg") == 3
    missing = run_cli("report", "nope", "--no-semantic", home=home.root)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no run 'nope'" in missing.stderr


def test_the_report_counts_what_the_run_graph_made(tmp_path):
    """End to end with the fake model: 12 reading comprehension seeds cover 12 task types, every seed item
    refined once."""
    from tests.test_coverage import corpus_of, fake_llm
    corpus = corpus_of(tmp_path / "corpus", 12)
    run = teachgraph.run("reading_comprehension", [corpus], rounds=1, home=tmp_path / "home", run_id="rc",
                         llm=fake_llm(), model="fake")
    report = teachgraph.report("rc", home=tmp_path / "home", semantic=False)
    (rc,) = report.skills
    assert rc.covered == 12 and rc.samples == run.counts["samples"] == 24
    assert rc.refined == rc.seed_items == 12 and all(d > 0 for d in rc.edit_distances)
    assert sum(r.kept for r in rc.types.values()) == 24


def test_samples_the_run_gates_dropped_are_counted_by_gate_and_reason(planted, monkeypatch):
    """The gates record each dropped sample in the store (Registry.dropped_samples: sample_id, seed_id,
    gate, reason, duplicate_of, body); the report counts them per task type and dedup gate."""
    home, t = planted
    dropped = chat("p", "s2", 2, "name the gamma again", "gamma is three", t[1])
    rows = [{"sample_id": dropped["id"], "seed_id": "s2", "gate": "near_duplicate",
             "reason": "near-duplicate: Jaccard 0.80", "duplicate_of": "p:s2:r0", "body": json.dumps(dropped)}]
    monkeypatch.setattr(Registry, "dropped_samples", lambda self, run_id, gate=None: iter(rows), raising=False)
    (mcq,) = teachgraph.report("p", home=home.root, semantic=False).skills
    assert mcq.gate_duplicates == 1 and mcq.types[t[1]].gate_dropped == 1 and mcq.types[t[1]].kept == 1
    assert any(d.stage == "sample" and d.by == "gate near_duplicate" and d.reason == "near-duplicate: Jaccard 0.80"
               for d in mcq.drops)

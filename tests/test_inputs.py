"""Seed collection, the taxonomy data, and the output file's crash safety."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from teachgraph import skills
from teachgraph.output import SampleWriter
from teachgraph.seeds import MIN_CHUNK_CHARS, Chunk, Skipped, chunk_text, collect, read_documents
from tests.conftest import SAMPLE


def test_sample_corpus_has_text_and_code_seeds():
    items = list(collect([SAMPLE]))
    chunks = [i for i in items if isinstance(i, Chunk)]
    assert not [i for i in items if isinstance(i, Skipped)]
    assert {c.kind for c in chunks} == {"text", "code"}
    assert {c.source.rsplit(".", 1)[-1].split("#")[0] for c in chunks} >= {"txt", "md", "rst", "py", "jsonl"}
    assert len({c.id for c in chunks}) == len(chunks)
    assert all(len(c.text) <= 1200 + MIN_CHUNK_CHARS for c in chunks)


def test_bad_files_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "good.txt").write_text("A perfectly fine paragraph about sorting lists in Python. " * 5)
    (tmp_path / "empty.md").write_text("   \n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02PNG")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "records.jsonl").write_text('{"text": "A record with enough words to be a seed of its own."}\n'
                                            '{"text": \n' '{"title": "no text"}\n')
    (tmp_path / "page.html").write_text("<html><title>T</title><script>x()</script><p>Hello from HTML, "
                                        "with a paragraph of text.</p></html>")
    items = list(collect([tmp_path, tmp_path / "missing.txt"]))
    skipped = {i.source.split("/")[-1]: i.reason for i in items if isinstance(i, Skipped)}
    assert skipped["empty.md"] == "empty file"
    assert skipped["binary.txt"] == "binary file"
    assert skipped["latin1.txt"].startswith("not UTF-8")
    assert skipped["image.png"].startswith("unsupported file type")
    assert skipped["records.jsonl#line2"].startswith("malformed JSON")
    assert skipped["records.jsonl#line3"] == "no non-empty 'text' field"
    assert skipped["missing.txt"] == "no such file or directory"
    chunks = [i for i in items if isinstance(i, Chunk)]
    assert {c.source.split("/")[-1] for c in chunks} == {"good.txt", "records.jsonl#line1", "page.html"}
    html = next(c for c in chunks if c.source.endswith("page.html"))
    assert "x()" not in html.text and "Hello from HTML" in html.text


def test_chunking_respects_the_limit_and_keeps_all_text():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * (i * 40) for i in range(1, 8))
    chunks = list(chunk_text(text, 600))
    assert all(len(c) <= 600 + MIN_CHUNK_CHARS for c in chunks) and all(len(c) >= MIN_CHUNK_CHARS for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_rag_taxonomy_loads_and_covers_types_evenly():
    skill = skills.load("rag")
    names = [t.name for t in skill.taxonomy]
    assert len(names) == len(set(names)) >= 7
    assert all(t.description for t in skill.taxonomy)
    deal = skill.assigner()
    dealt = [deal(f"seed{i}", "text")[1] for i in range(len(names) * 3)]
    assert all(dealt.count(n) == 3 for n in names)
    for agent in ("transform", "generate", "suggest", "edit", "answer", "sample"):
        assert skill.prompt(agent).system or skill.prompt(agent).user


def test_taxonomy_validation_rejects_duplicates(tmp_path):
    (tmp_path / "taxonomy.toml").write_text('[[types]]\nname="a"\ndescription="x"\n'
                                            '[[types]]\nname="a"\ndescription="y"\n')
    with pytest.raises(skills.SkillError, match="duplicate"):
        skills._load_taxonomy(tmp_path / "taxonomy.toml")
    with pytest.raises(skills.SkillError, match="unknown skill"):
        skills.load("no_such_skill")


def test_reconcile_cuts_a_half_line_and_adds_missing_samples_once(tmp_path):
    out = tmp_path / "samples.jsonl"
    committed = [(f"s{i}", json.dumps({"id": f"s{i}", "n": i})) for i in range(4)]
    out.write_text(committed[0][1] + "\n" + committed[1][1] + "\n" + '{"id": "s2", "n"')   # killed mid-write
    writer = SampleWriter(out)
    assert writer.reconcile(committed) == 2
    writer.close()
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["s0", "s1", "s2", "s3"]
    writer = SampleWriter(out)
    assert writer.reconcile(committed) == 0       # idempotent
    writer.close()
    assert len(out.read_text().splitlines()) == 4


def test_a_single_line_of_megabytes_is_chunked_in_linear_time(tmp_path):
    """One 16 MB line: each cut used to copy the rest of the line (105 s measured; 40 MB took 6 min)."""
    path = tmp_path / "one_line.txt"
    path.write_text("Lorem ipsum dolor sit amet consectetur adipiscing elit " * (16 * 1024 * 1024 // 56))
    started = time.perf_counter()
    first = next(collect([path]))
    chunks = sum(1 for _ in collect([path]))
    elapsed = time.perf_counter() - started
    assert isinstance(first, Chunk) and chunks > 13_000
    assert elapsed < 5, f"{elapsed:.1f} s to chunk 16 MB"


def legacy_chunk_text(text: str, limit: int) -> list[str]:
    """The chunker before it was made linear and lazy, verbatim: what every seed was cut by."""
    def split(text: str, limit: int) -> list[str]:
        blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
        pieces: list[str] = []
        for block in blocks:
            if len(block) <= limit:
                pieces.append(block)
                continue
            units = block.splitlines() if "\n" in block else re.split(r"(?<=[.!?])\s+", block)
            current = ""
            for unit in units:
                if len(unit) > limit and current:
                    pieces.append(current)
                    current = ""
                while len(unit) > limit:
                    cut = unit.rfind(" ", limit // 2, limit)
                    cut = cut if cut > 0 else limit
                    pieces.append(unit[:cut])
                    unit = unit[cut:].lstrip(" ")
                if current and len(current) + len(unit) + 1 > limit:
                    pieces.append(current)
                    current = ""
                current = f"{current}\n{unit}" if current else unit
            if current:
                pieces.append(current)
        packed: list[str] = []
        for piece in pieces:
            if packed and len(packed[-1]) + len(piece) + 2 <= limit:
                packed[-1] = f"{packed[-1]}\n\n{piece}"
            else:
                packed.append(piece)
        return packed

    chunks: list[str] = []
    carry = ""
    for piece in split(text, limit):
        piece = f"{carry}\n\n{piece}" if carry else piece
        carry = ""
        if len(piece) < MIN_CHUNK_CHARS:
            carry = piece
        else:
            chunks.append(piece)
    if carry:
        if chunks:
            chunks[-1] = f"{chunks[-1]}\n\n{carry}"
        else:
            chunks.append(carry)
    return chunks


def test_the_linear_chunker_cuts_exactly_as_before():
    """No seed of an ordinary corpus changes: the bundled corpus and random text cut alike."""
    documents = {}
    for chunk in (c for c in collect([SAMPLE]) if isinstance(c, Chunk)):
        path = Path(chunk.source.split("#")[0])
        if path not in documents:
            documents[path] = {d[0]: legacy_chunk_text(d[2], 1200) for d in read_documents(path)}
        assert chunk.text == documents[path][chunk.source][chunk.index]
    assert sum(map(len, (c for d in documents.values() for c in d.values()))) == 18
    rng = random.Random(12)
    parts = ["word", "x" * 300, " ", "   ", ".", "!", "?", "\n", "\n\n", " \n \n", "\r\n", "\u2028", "\t",
             "longword" * 60, "a. b", "\x85", "é"]
    for _ in range(600):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 300)))
        for limit in (5, 50, 420, 1200):
            assert list(chunk_text(text, limit)) == legacy_chunk_text(text, limit), (text, limit)


def test_collecting_is_counted_in_the_wall_time_and_says_so(tmp_path, monkeypatch, capsys):
    from teachgraph import api, cli
    from teachgraph.checkpoints.registry import Registry
    from teachgraph.runner import Settings

    def slow_collect(paths):
        time.sleep(0.6)           # a large corpus being read
        yield from collect(paths)

    monkeypatch.setattr(api, "collect", slow_collect)
    registry = Registry(tmp_path / "runs.db")
    settings = Settings(skill="rag", seeds=[str(SAMPLE)], out=str(tmp_path / "out.jsonl"), limit=2)
    registry.create_run("r", "rag", settings.to_json())
    api._collect_seeds(registry, "r", settings, [SAMPLE], cli.ConsoleReporter())
    assert registry.counts("r")["total"] == 2
    assert registry.run("r")["wall_seconds"] >= 0.6
    assert f"collecting seeds from {SAMPLE} ..." in capsys.readouterr().err

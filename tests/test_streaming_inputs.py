"""JSON Lines seeds are checked and read without holding the file in memory, with the same
outcomes as reading it whole: same records, same line numbers, same reasons to skip it."""

from __future__ import annotations

import json

import pytest

from teachgraph import seeds
from teachgraph.seeds import _check_text, collect


def test_lines_and_numbers_match_reading_the_file_whole(tmp_path):
    path = tmp_path / "r.jsonl"
    records = ['{"text": "first record, long enough to be a seed on its own"}', "",
               '{"text": "a second one\\u2028with an escaped line separator"}', "not json",
               '{"text": "third\\r\\nrecord with escapes"}']
    raw = "\r\n".join(records) + "\x0c" + '{"text": "after a form feed, which does not end a record"}\n'
    path.write_text(raw, encoding="utf-8")
    assert list(seeds._lines(path)) == [line.removesuffix("\r") for line in raw.removesuffix("\n").split("\n")]
    found = {c.source.split("#")[-1] for c in collect([path]) if isinstance(c, seeds.Chunk)}
    assert found == {"line1", "line3"}        # line 5 runs into the form feed's record: malformed JSON


def test_raw_line_separators_inside_a_json_string_stay_in_their_record(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028, U+2029, U+0085 and other characters that
    str.splitlines() breaks at raw inside strings: each record stays one record, numbered by "\\n"."""
    texts = [f"first part of the record{sep}second part of the same record, long enough to be a seed"
             for sep in ("\u2028", "\u2029", "\x85", "\x0b", "\x1c", "\x1d", "\x1e")]
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    items = list(collect([path]))
    assert not [i for i in items if isinstance(i, seeds.Skipped)]
    assert [(c.source.split("#")[-1], c.text) for c in items] == [(f"line{n}", t) for n, t in enumerate(texts, 1)]


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_streamed_checks_give_the_whole_file_reasons(tmp_path, chunk):
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "caf\u00e9 " * 20}).encode() + b"\n")
    _check_text(good, chunk)                                     # BOM and multi-byte characters split anywhere
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n' * 3 + b'{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 55\)"):
        _check_text(bad, chunk)
    with pytest.raises(ValueError) as whole:
        seeds._read_text(bad)
    assert str(whole.value) == "not UTF-8 text (byte 55)"
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"text": "ok"}\n' * 1000 + b"\x00")
    with pytest.raises(ValueError, match="binary file \\(NUL byte at offset 15000\\)"):
        _check_text(binary, chunk)
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n \n")
    with pytest.raises(ValueError, match="empty file"):
        _check_text(blank, chunk)

"""Decontamination: drop a sample that shares a long word n-gram with an evaluation item.

n follows GPT-3 (Brown et al., 2020, appendix C): per evaluation file, the 5th percentile of its items'
lengths in words, clamped to 8..13. 13 is GPT-3's and NeMo Curator's default; 8 is the floor below
which ordinary phrases collide (Llama 2 counted 8+ token spans as contamination for the same reason). A
field shorter than n (but of at least 8 words) counts as one n-gram of its own length, so a short
question copied whole is still caught. Words are lower-cased NFKC `\\w+` runs, punctuation dropped, as
GPT-3 normalised. Every string field of an evaluation row counts; the row's id is `id` (or a common
id column) if it has one, else FILE:ROW."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator, Optional

import xxhash
from pydantic import BaseModel, ConfigDict, Field

from teachgraph.errors import UsageError
from teachgraph.gates.base import KEEP, ChatSample, Gate, Verdict, register
from teachgraph.gates.text import words

ID_FIELDS = ("id", "_id", "idx", "task_id", "question_id", "qid", "uid")
MIN_N, MAX_N = 8, 13


class EvalFileError(UsageError):
    pass


def _string_fields(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _string_fields(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _string_fields(v)


def _arrow_rows(tables) -> Iterator[dict]:
    for table in tables:
        for batch in table.to_batches():
            yield from batch.to_pylist()


def read_rows(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file, a Parquet file, or a `datasets` folder (save_to_disk's Arrow files, or Parquet)."""
    if path.is_dir():
        files = sorted(path.glob("**/*.arrow")) or sorted(path.glob("**/*.parquet"))
        if not files:
            raise EvalFileError(f"{path}: a folder with no .arrow or .parquet files")
        for f in files:
            yield from read_rows(f)
        return
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        yield from _arrow_rows([pq.read_table(path)])
    elif suffix == ".arrow":
        import pyarrow as pa
        with pa.memory_map(str(path)) as source:
            try:
                yield from _arrow_rows([pa.ipc.open_stream(source).read_all()])  # datasets' save_to_disk
            except pa.ArrowInvalid:
                yield from _arrow_rows([pa.ipc.open_file(source).read_all()])
    else:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise EvalFileError(f"{path}:{number}: not JSON ({exc.msg})") from None
                yield row if isinstance(row, dict) else {"value": row}


def _row_id(row: dict, path: Path, number: int) -> str:
    for key in ID_FIELDS:
        if row.get(key) is not None:
            return f"{path.name}:{row[key]}"
    return f"{path.name}:{number}"


def ngram_size(lengths: list[int]) -> int:
    if not lengths:
        return MAX_N
    ordered = sorted(lengths)
    p5 = ordered[max(0, math.ceil(0.05 * len(ordered)) - 1)]
    return min(MAX_N, max(MIN_N, p5))


def _key(tokens) -> int:
    return xxhash.xxh64_intdigest(" ".join(tokens).encode("utf-8"))


class EvalIndex:
    """Hashes of every evaluation n-gram -> the item it came from. Evaluation sets are small (a 10k-item
    benchmark is a few hundred thousand n-grams), so this lives in memory."""

    def __init__(self):
        self.owner: dict[int, str] = {}
        self.sizes: set[int] = set()
        self.files: list[tuple[str, int, int]] = []   # (file, n, items)

    def add_file(self, path: Path) -> None:
        if not path.exists():
            raise EvalFileError(f"{path}: no such file or folder")
        items = []
        for number, row in enumerate(read_rows(path), 1):
            item_id = _row_id(row, path, number)
            items.extend((item_id, tokens) for tokens in map(words, _string_fields(row)) if tokens)
        n = ngram_size([len(t) for _, t in items])
        for item_id, tokens in items:
            if len(tokens) < MIN_N:
                continue
            size = min(n, len(tokens))
            self.sizes.add(size)
            for i in range(len(tokens) - size + 1):
                self.owner.setdefault(_key(tokens[i:i + size]), item_id)
        self.files.append((str(path), n, len({i for i, _ in items})))

    def find(self, tokens: list[str]) -> tuple[Optional[str], str, int]:
        """The first evaluation item sharing an n-gram with `tokens`, that n-gram, and how many do."""
        first, gram, hits = None, "", 0
        for size in sorted(self.sizes, reverse=True):
            for i in range(len(tokens) - size + 1):
                owner = self.owner.get(_key(tokens[i:i + size]))
                if owner is not None:
                    hits += 1
                    if first is None:
                        first, gram = owner, " ".join(tokens[i:i + size])
        return first, gram, hits


@register("decontaminate")
class Decontaminate(Gate):
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        files: list[Path] = Field(default_factory=list, description="evaluation sets: JSONL, Parquet, datasets folders")

    def __init__(self, settings, store=None):
        super().__init__(settings, store)
        self.index = EvalIndex()
        for path in settings.files:
            self.index.add_file(Path(path))

    def check(self, sample: ChatSample) -> Verdict:
        for part, tokens in (("instruction", sample.instruction_words), ("response", sample.response_words)):
            item, gram, hits = self.index.find(tokens)
            if item is not None:
                return self.drop(f"the {part} shares {hits} word n-gram(s) with evaluation item {item}, "
                                 f"first: \"{gram}\"", item)
        return KEEP

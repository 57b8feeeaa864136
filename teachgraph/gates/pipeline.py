"""Gates in order, and `filter_file`, which runs them over any JSON Lines file of chat samples."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

from teachgraph.gates.base import KEEP, ChatSample, Gate, SampleError, Verdict, make_gate
from teachgraph.gates.store import GateStore

if TYPE_CHECKING:   # the model client loads only for a judged filter
    from teachgraph.client.llm import LLM

# Cheap, stateless gates first (decontamination before grounding: a leaked evaluation item is named as
# such, with the item it copies); the dedup indexes next, so they only ever hold rows that are kept; the
# judge (a model call per row) last, on what every other gate kept.
DEFAULT_ORDER = ("degenerate", "decontaminate", "grounding", "exact_duplicate", "near_duplicate",
                 "semantic_duplicate", "judge")


class Pipeline:
    def __init__(self, gates: list[Gate], store: Optional[GateStore] = None):
        self.gates = gates
        self.store = store

    @classmethod
    def build(cls, store: GateStore, decontaminate: list[Path] = (), semantic: bool = False,
              judge: Optional[LLM] = None) -> "Pipeline":
        wanted = {"degenerate": {}, "exact_duplicate": {}, "near_duplicate": {}}
        if judge is not None:
            wanted["judge"] = {"llm": judge}
        if decontaminate:
            wanted["decontaminate"] = {"files": list(decontaminate)}
        if semantic:
            import teachgraph.gates.semantic  # noqa: F401  (registers the gate; needs the `semantic` extra)
            wanted["semantic_duplicate"] = {}
        return cls([make_gate(name, store, **wanted[name]) for name in DEFAULT_ORDER if name in wanted], store)

    def judge(self, sample: ChatSample) -> Verdict:
        """The first gate that drops the sample decides; a kept sample is admitted to every gate (and
        comes back with the first flag a gate raised, if any)."""
        flagged = KEEP
        for gate in self.gates:
            verdict = gate.check(sample)
            if not verdict.keep:
                return verdict
            if verdict.flagged and not flagged.flagged:
                flagged = verdict
        for gate in self.gates:
            gate.admit(sample)
        return flagged

    def close(self) -> None:
        for gate in self.gates:
            gate.close()


@dataclass
class FilterCounts:
    rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    flagged: Counter = field(default_factory=Counter)   # kept rows a gate flagged, by gate
    blank_lines: int = 0


def _rejected_line(raw: bytes, row, verdict: Verdict, number: int) -> bytes:
    body = dict(row) if isinstance(row, dict) else {"line": number, "raw": raw.decode("utf-8", "replace").rstrip("\n")}
    body["rejection"] = verdict.rejection()
    return (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")


def filter_lines(pipeline: Pipeline, source: BinaryIO, kept: BinaryIO, rejected: Optional[BinaryIO],
                 commit_every: int = 2000) -> FilterCounts:
    """Stream `source`: each row's bytes go to `kept` unchanged, or to `rejected` with its rejection.
    Memory is the gates' indexes, never the rows."""
    counts = FilterCounts()
    store = pipeline.store
    for number, raw in enumerate(source, 1):
        if not raw.strip():
            counts.blank_lines += 1
            continue
        counts.rows += 1
        row = None
        try:
            row = json.loads(raw)
            sample = ChatSample.from_row(row, fallback_id=f"line {number}")
        except UnicodeDecodeError:
            verdict = Verdict.drop("format", "not UTF-8")
        except json.JSONDecodeError as exc:
            verdict = Verdict.drop("format", f"not JSON: {exc.msg}")
        except SampleError as exc:
            verdict = Verdict.drop("format", str(exc))
        else:
            verdict = pipeline.judge(sample)
        if verdict.keep:
            counts.kept += 1
            if verdict.flagged:
                counts.flagged[verdict.gate] += 1
            kept.write(raw if raw.endswith(b"\n") else raw + b"\n")
        else:
            counts.dropped[verdict.gate] += 1
            if rejected is not None:
                rejected.write(_rejected_line(raw, row, verdict, number))
        if store is not None and counts.rows % commit_every == 0:
            store.db.conn.commit()
    if store is not None:
        store.db.conn.commit()
    return counts


def filter_file(source: Path, kept: Path, rejected: Optional[Path] = None, decontaminate: list[Path] = (),
                semantic: bool = False, state: Optional[Path] = None, judge: Optional[LLM] = None) -> FilterCounts:
    """The `filter` command: gates over a file. `state` keeps the dedup indexes in a SQLite file;
    by default a temporary one (on disk, not in memory: it holds every kept row's text), deleted after.
    `judge`: the model the LLM judge gate asks (teachgraph.api.filter_samples builds it)."""
    scratch = None
    if state is None:
        scratch = tempfile.TemporaryDirectory(prefix="teachgraph-filter-")
        state = Path(scratch.name) / "gates.db"
    store = GateStore(state)
    pipeline = None
    try:
        pipeline = Pipeline.build(store, decontaminate=decontaminate, semantic=semantic, judge=judge)
        with source.open("rb") as src, kept.open("wb") as out:
            if rejected is None:
                return filter_lines(pipeline, src, out, None)
            with rejected.open("wb") as rej:
                return filter_lines(pipeline, src, out, rej)
    finally:
        if pipeline is not None:
            pipeline.close()
        store.close()
        if scratch is not None:
            scratch.cleanup()

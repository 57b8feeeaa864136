"""Quality gates: a sample in, keep or drop (gate, reason, duplicate_of) out. See base.py for the
interface; importing this package registers the built-in gates (semantic needs the `semantic` extra
and registers when teachgraph.gates.semantic is imported)."""

from teachgraph.gates.base import GATES, KEEP, ChatSample, Gate, SampleError, Verdict, make_gate, register
from teachgraph.gates.store import GateStore
from teachgraph.gates import decontaminate, dedup, degenerate  # noqa: F401  (register the gates)
from teachgraph.gates.pipeline import FilterCounts, Pipeline, filter_file, filter_lines

__all__ = ["GATES", "KEEP", "ChatSample", "FilterCounts", "Gate", "GateStore", "Pipeline", "SampleError",
           "Verdict", "filter_file", "filter_lines", "make_gate", "register"]

"""Quality gates: a sample in, keep or drop (gate, reason, duplicate_of) out. See base.py for the
interface. The built-in gates register from their modules the first time GATES is asked for a name
(teachgraph/extensions.py), as plugins do; semantic needs the `semantic` extra and registers when
teachgraph.gates.semantic is imported."""

from teachgraph.gates.base import GATES, KEEP, ChatSample, Gate, SampleError, Verdict, make_gate, register
from teachgraph.gates.store import GateStore
from teachgraph.gates.pipeline import FilterCounts, Pipeline, filter_file, filter_lines

__all__ = ["GATES", "KEEP", "ChatSample", "FilterCounts", "Gate", "GateStore", "Pipeline", "SampleError",
           "Verdict", "filter_file", "filter_lines", "make_gate", "register"]

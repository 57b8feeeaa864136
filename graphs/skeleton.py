"""The skeleton every skill's graph shares (AgentInstruct's three flows and the answer):

    START -> transform ... -> generate -> [suggest <-> edit]* -> answer ... -> gate -> END

A graph supplies its state, its input state and its agents, wires transform to generate (directly, or
through steps of its own such as flow's `extend`) and adds what follows answer (follow-up turns,
simulated tools) and routes its last step to `gate` (nodes/gates.py: the run's quality gates on
each sample before it is written), which ends the graph. The suggester and editor end refinement
when their output is unusable (nodes.agent.stop_refining), in every graph.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from teachgraph.graphs.refinement import add_refinement_loop
from teachgraph.nodes.agent import Apply, Inputs, agent_node, stop_refining
from teachgraph.nodes.context import RunContext
from teachgraph.nodes.gates import NODE as GATE, gate


class Agent(NamedTuple):
    """An agent node's parts: its reply schema (or a function of state and context that picks one),
    the values its prompt is given, and how its reply updates the state."""

    schema: type[BaseModel] | Callable[[Any, RunContext], type[BaseModel]]
    inputs: Inputs
    apply: Apply


def instruction_graph(state: type, input_state: type, *, transform: Callable, generate: Agent,
                      suggest: Agent, edit: Agent, answer: Callable) -> StateGraph:
    builder = StateGraph(state, context_schema=RunContext, input_schema=input_state)
    builder.add_node("transform", transform)
    builder.add_node("generate", agent_node("generate", *generate))
    builder.add_node("suggest", agent_node("suggest", *suggest, on_unusable=stop_refining))
    builder.add_node("edit", agent_node("edit", *edit, on_unusable=stop_refining))
    builder.add_node("answer", answer)
    builder.add_node(GATE, gate)
    builder.add_edge(GATE, END)
    builder.add_edge(START, "transform")
    add_refinement_loop(builder, entry="generate", exit="answer")
    return builder

"""A skill's graph as people review it: each node labelled by its agent's role, each edge by the condition
that takes it (the routers' `when` labels, graphs/refinement.py), and, for a run, each node's figures
(runs, LLM calls, tokens, mean time, rejections and failures, from the store's `steps`) and how often each
edge was taken. One model, drawn four ways: Mermaid, ASCII, and Graphviz (SVG for the review page, PNG)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from teachgraph.skills import Skill

START, END = "__start__", "__end__"

# What each node of the AgentInstruct skeleton does (nodes a graph adds without a role show their name)
ROLES = {
    "transform": "content transformation agent",
    "extend": "API extension agent",
    "generate": "seed instruction agent",
    "suggest": "refinement: suggester",
    "edit": "refinement: editor",
    "answer": "answer agent, then checks",
    "follow_up": "user follow-up agent",
    "simulate_tools": "tool result simulator",
}


@dataclass
class Node:
    id: str
    role: str
    figures: dict[str, Any] | None = None     # a run's: runs, llm_calls, tokens, mean_seconds, rejected, failed

    def figure_text(self) -> str:
        f = self.figures
        if not f:
            return ""
        parts = [f"{f['runs']} runs", f"{f['llm_calls']} calls", f"{_short(f['tokens'])} tok",
                 f"{f['mean_seconds']:.2f} s mean"]
        if f.get("cache_hits"):
            parts.append(f"{f['cache_hits']} cached")
        if f.get("rejected"):
            parts.append(f"{f['rejected']} rejected")
        if f.get("failed"):
            parts.append(f"{f['failed']} failed")
        return " · ".join(parts)


@dataclass
class Edge:
    source: str
    target: str
    condition: str | None = None   # None: always taken (a plain edge)
    taken: int | None = None       # a run's count (routed edges only)

    def label(self) -> str:
        text = self.condition or ""
        if self.taken is not None:
            text = f"{text} ({self.taken}×)" if text else f"{self.taken}×"
        return text


@dataclass
class Diagram:
    skill: str
    nodes: list[Node]
    edges: list[Edge] = field(default_factory=list)

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)


def _short(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


def diagram(skill: Skill, node_figures: list[dict] = (), edge_figures: list[dict] = ()) -> Diagram:
    """The skill's graph; with a run's `Registry.node_figures` / `edge_figures`, annotated with them."""
    builder = skill.build_graph()
    figures = {row["node"]: row for row in node_figures if row["skill"] == skill.name}
    taken = {(row["node"], row["next"]): row["taken"] for row in edge_figures if row["skill"] == skill.name}
    nodes = [Node(START, "start"), *(Node(name, ROLES.get(name, name), figures.get(name)) for name in builder.nodes),
             Node(END, "end")]
    edges = [Edge(source, target) for source, target in sorted(builder.edges)]
    for source, branches in builder.branches.items():
        for spec in branches.values():
            route = getattr(spec.path, "afunc", None) or getattr(spec.path, "func", None)
            conditions = getattr(route, "conditions", {})
            for target in (spec.ends or {}).values():
                edges.append(Edge(source, target, conditions.get(target, f"{getattr(route, '__name__', 'route')}"
                                                                         f" -> {target}"),
                                  taken.get((source, target), 0) if figures else None))
    return Diagram(skill.name, nodes, edges)


def node_info(skill: Skill, node: str) -> dict[str, Any]:
    """What a node runs: its prompt templates and what it draws from (transformations, task types,
    refinement goals, checks), for the review page's node panel."""
    prompts = {name: {"system": p.system, "user": p.user, "assistant": p.assistant}
               for name, p in skill.prompts.items()
               if name == node or (node == "answer" and name in ("correction", "sample"))}
    draws: list[dict[str, str]] = []
    kind = ""
    if node == "transform" and skill.transformations:
        kind, draws = "transformation agents", [{"name": t.name, "description": t.description}
                                                for t in skill.transformations]
    elif node == "generate":
        kind, draws = "taxonomy (task types)", [{"name": t.name, "description": t.description}
                                                for t in skill.taxonomy]
    elif node in ("suggest", "edit") and skill.spec.refinement.goals:
        kind, draws = "refinement goals", [{"name": g.name, "description": g.description}
                                           for g in skill.spec.refinement.goals]
    elif node == "answer" and skill.spec.checks:
        kind, draws = "checks", [{"name": c, "description": ""} for c in skill.spec.checks]
    return {"skill": skill.name, "node": node, "role": ROLES.get(node, node), "prompts": prompts,
            "draws_from": kind, "items": draws}


# ---------------------------------------------------------------- drawings

def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(d: Diagram) -> str:
    lines = ["flowchart TD"]
    for n in d.nodes:
        if n.id in (START, END):
            lines.append(f"    {n.id}([{n.id.strip('_')}])")
            continue
        label = f"<b>{n.id}</b><br/>{n.role}" + (f"<br/><i>{n.figure_text()}</i>" if n.figures else "")
        lines.append(f'    {n.id}["{_mermaid_text(label)}"]')
    for e in d.edges:
        label = e.label()
        arrow = f' -. "{_mermaid_text(label)}" .-> ' if e.condition else (f' -- "{label}" --> ' if label else " --> ")
        lines.append(f"    {e.source}{arrow}{e.target}")
    return "\n".join(lines)


def to_ascii(d: Diagram, drawing: str | None) -> str:
    """LangGraph's box drawing (when grandalf can lay the graph out), then every node with its role and
    figures and every edge with its condition."""
    lines = [drawing, ""] if drawing else []
    lines.append("nodes:")
    width = max(len(n.id) for n in d.nodes)
    for n in d.nodes:
        if n.id not in (START, END):
            lines.append(f"  {n.id:<{width}}  {n.role}" + (f"  [{n.figure_text()}]" if n.figures else ""))
    lines.append("edges:")
    for e in d.edges:
        label = e.label()
        lines.append(f"  {e.source} -> {e.target}" + (f"  when {label}" if e.condition else
                                                       (f"  {label}" if label else "")))
    return "\n".join(lines)


def to_graphviz(d: Diagram):
    """A pygraphviz AGraph (the `png` / `review` extra): node ids are the SVG group ids `node-NAME`."""
    import pygraphviz

    g = pygraphviz.AGraph(directed=True, strict=False, rankdir="TB")
    g.graph_attr.update(fontname="Helvetica", nodesep="0.5", ranksep="0.55")
    g.node_attr.update(fontname="Helvetica", fontsize="11", shape="box", style="rounded,filled",
                       fillcolor="#eef3fb", color="#4a6fa5")
    g.edge_attr.update(fontname="Helvetica", fontsize="9", color="#555555")
    for n in d.nodes:
        if n.id in (START, END):
            g.add_node(n.id, label=n.id.strip("_"), shape="oval", fillcolor="#dddddd", id=f"node-{n.id}")
            continue
        failed = bool(n.figures and (n.figures.get("failed") or n.figures.get("rejected")))
        label = f"{n.id}\n{n.role}" + (f"\n{n.figure_text()}" if n.figures else "")
        g.add_node(n.id, label=label, id=f"node-{n.id}", tooltip=f"{n.id}: click for its prompt",
                   fillcolor="#fbeeee" if failed else "#eef3fb")
    for i, e in enumerate(d.edges):
        g.add_edge(e.source, e.target, key=str(i), label=e.label(), id=f"edge-{e.source}-{e.target}",
                   style="dashed" if e.condition else "solid")
    return g


def render(d: Diagram, fmt: str) -> bytes:
    """Graphviz output (svg, png) of the diagram."""
    return to_graphviz(d).draw(format=fmt, prog="dot")

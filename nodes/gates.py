"""The gate node type: the run's quality gates (teachgraph/gates/run.py) on each of a seed's samples before
any is written.

    ... -> answer -> gate -> END

A kept sample's metadata gets `gates`: [{gate, verdict "pass", reason null}] for each gate it passed
(export reads it). A dropped sample leaves the seed's `samples` for `dropped` (its body, whose
metadata.gates holds the rejecting verdict, and the gate's rejection: gate, reason, duplicate_of), which
the runner records with the seed's outcome in one transaction. A seed whose every sample was dropped
ends rejected with the first gate's reason. The node makes no model call; what it admitted is committed
before its checkpoint, and RunGates.judge_seed keeps an admitted sample on a rerun, so a kill between
the two loses nothing and drops nothing twice."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from teachgraph.gates.run import GateConfigError, check_table
from teachgraph.nodes.context import RunContext
from teachgraph.skills import Skill, SkillError

NODE = "gate"


def check_gates(skill: Skill) -> None:
    """skills.check_gates' hook: the skill's [gates] table names known gates and settings."""
    try:
        check_table(skill.spec.gates, where=f"skill {skill.name}: [gates]")
    except GateConfigError as exc:
        raise SkillError(str(exc)) from None


def describe(rejection: dict[str, Any]) -> str:
    """One line for a seed rejected by a gate: `gate: reason (duplicate of ID)`."""
    also = f" (duplicate of {rejection['duplicate_of']})" if rejection.get("duplicate_of") else ""
    return f"{rejection['gate']}: {rejection['reason']}{also}"


def _with_gates(sample: dict, verdicts: list[dict]) -> dict:
    """The sample with the gates' verdicts in its lineage (metadata.gates, which export reads)."""
    return {**sample, "metadata": {**sample.get("metadata", {}), "gates": verdicts}}


async def gate(state: dict, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    samples = state.get("samples") or []
    if state.get("rejected") or not samples or ctx.gates is None:
        return {}
    pipeline = ctx.gates.pipeline(ctx.skill.name, ctx.skill.spec.gates)
    if not pipeline.gates:
        return {}
    verdicts = ctx.gates.judge_seed(pipeline, samples)
    passed = [{"gate": g.name, "verdict": "pass", "reason": None} for g in pipeline.gates]
    kept = [_with_gates(s, passed) for s, v in zip(samples, verdicts) if v.keep]
    dropped = [{"sample": _with_gates(s, [{"gate": v.gate, "verdict": "reject", "reason": v.reason}]),
                **v.rejection()} for s, v in zip(samples, verdicts) if not v.keep]
    update: dict[str, Any] = {"samples": kept, "dropped": dropped}
    if not kept:
        update.update(rejected=describe(dropped[0]), rejected_by=NODE)
    return update

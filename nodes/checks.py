"""Checks on answers, named in a skill's skill.toml (`checks = ["python_tests"]`).

A check looks at the task (the item the flow wrote) and the answer agent's reply. It passes, or
fails with feedback the answer agent gets for a correction; `extras` are values the check computed
for the sample (a Fermi estimate's evaluated calculation). Code and arithmetic run only in the
sandbox (nodes/sandbox.py), never in this process. An async check is given a model handle (Model: the
run's judge model with --judge-model, else its own): the LLM judge (`judge`, below) is a check like any
other. Checks register in CHECKS (teachgraph/extensions.py), built-ins and plugins alike.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel

from teachgraph.extensions import Registry, UnknownName
from teachgraph.client.llm import LLM, UnusableOutput, Usage
from teachgraph.nodes.agent import NodeFailed
from teachgraph.nodes.context import RunContext
from teachgraph.nodes.sandbox import Limits, run_python
from teachgraph.gates import judge as judging
from teachgraph.skills import Skill, SkillError, rubric_for
from teachgraph.skills.spec import Judge


@dataclass
class Verdict:
    name: str
    ok: bool
    feedback: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)   # more for the sample's record (a judge's score)

    def record(self) -> dict[str, Any]:
        """What the sample's metadata keeps about this check."""
        return {"check": self.name, "ok": self.ok, **({"detail": self.detail} if self.detail else {}),
                **self.lineage}


@dataclass
class Model:
    """The model a check may ask, so that a judge is just a check: an async check is given this handle
    (the run's judge model if it has one, `--judge-model`, else its own), and the calls it makes count
    in the seed's usage like the answer's own. `skill`: the skill being checked (its rubric, threshold)."""

    llm: LLM
    used: Usage = field(default_factory=Usage)
    skill: Skill | None = None

    async def ask(self, system: str, user: str, schema: type[BaseModel], max_tokens: int | None = None) -> Any:
        value, _ = await self.llm.structured(system, user, schema, max_tokens=max_tokens or self.llm.max_tokens,
                                             used=self.used)
        return value


@dataclass(frozen=True)
class CheckDef:
    """A registered check: `fn(item, response) -> Verdict`, or `async fn(item, response, model) -> Verdict`
    for a check that asks the model (a judge)."""

    name: str
    fn: Callable[..., Any]
    extras: tuple[str, ...] = ()     # values it computes for the sample's assistant template ($result)

    @property
    def judges(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    async def __call__(self, item: dict, response: dict, model: Model) -> Verdict:
        if not self.judges:   # in a thread: a sandboxed check waits seconds for its child process
            return await asyncio.to_thread(self.fn, item, response)
        try:
            return await self.fn(item, response, model)
        except UnusableOutput as exc:
            return Verdict(self.name, False, f"the judge gave no usable verdict: {exc}", detail="judge unusable")


CHECKS: Registry[CheckDef] = Registry("check", CheckDef, builtins=(__name__,))
check = CHECKS.register


def checks_for(skill: Skill, judged: bool = False) -> list[CheckDef]:
    """The checks skill.toml names, and the LLM judge last when the run has a judge model (`judged`);
    flow.build calls it, so a misspelt name stops the skill before any model call instead of failing
    each seed at its answer."""
    names = [*skill.spec.checks, *(["judge"] if judged and "judge" not in skill.spec.checks else [])]
    try:
        return [CHECKS.get(name) for name in names]
    except UnknownName as exc:
        raise SkillError(f"skill {skill.name}: {exc}") from None


async def run_all(skill: Skill, item: dict, response: dict, model: Model, judged: bool = False) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for check_def in checks_for(skill, judged):
        if check_def.judges and any(not v.ok for v in verdicts):
            continue   # a model's opinion of an answer that already failed a cheap check is not worth a call
        verdicts.append(await check_def(item, response, model))
    return verdicts


async def check_answer(ctx: RunContext, item: dict, response: dict, used: Usage) -> list[Verdict]:
    """An answer node's checks: the skill's, and the LLM judge when the run has a judge model. Their
    calls are added to `used`; an endpoint error fails the seed at `answer`, with every call counted."""
    judged = ctx.llm.judge is not None
    if not ctx.skill.spec.checks and not judged:
        return []
    model = Model(ctx.llm.judge or ctx.llm, skill=ctx.skill)
    try:
        return await run_all(ctx.skill, item, response, model, judged)
    except Exception as exc:  # a judge's endpoint failed
        raise NodeFailed("answer", exc, used) from exc
    finally:
        used.add(model.used)


def failure(verdicts: list[Verdict]) -> str:
    """Why an answer failed its checks ("" if it did not): the reason a dropped sample records."""
    failed = [v for v in verdicts if not v.ok]
    if not failed:
        return ""
    return f"check {', '.join(v.name for v in failed)} failed: {'; '.join(v.feedback for v in failed)}"


def shown(fields: dict) -> str:
    """A task's or a reply's fields as a judge reads them: one `name: value` block each."""
    return "\n\n".join(f"{name}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
                       for name, value in fields.items() if name not in ("round", "apis") and value not in ("", None))


@check("judge")
async def judge(item: dict, response: dict, model: Model) -> Verdict:
    """The LLM judge (teachgraph/gates/judge.py): the answer scored 1-10 against the skill's rubric;
    below the skill's [judge] threshold it fails, and the judge's reason is the feedback."""
    if response.get("action") == "call_tools":   # tool use: the reply after the tool results is judged
        return Verdict("judge", True, detail="tool calls: the final reply is judged")
    skill = model.skill
    verdict = await judging.judge(model.llm, title=skill.title if skill else "the task's skill",
                                  rubric=(skill.rubric if skill else None) or rubric_for(skill and skill.name),
                                  threshold=(skill.spec.judge.threshold if skill else Judge().threshold),
                                  task=shown(item), answer=shown(response), used=model.used)
    feedback = f"a reviewer {verdict.summary()}" if verdict.score is not None else verdict.summary()
    return Verdict("judge", verdict.passed, feedback, detail=verdict.summary(), lineage=verdict.record())


def _strip_fences(code: str) -> str:
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", code, re.S)
    return match.group(1) if match else code


@check("python_tests")
def python_tests(item: dict, response: dict) -> Verdict:
    """The answer's code must pass the tests the flow wrote (item["tests"]), run in the sandbox."""
    if "code" not in response:   # a reply without code (e.g. a clarifying question) has nothing to run
        return Verdict("python_tests", True, detail="no code in reply")
    code = _strip_fences(response["code"])
    tests = _strip_fences(item.get("tests", ""))
    try:
        asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(tests)))
    except SyntaxError as exc:
        return Verdict("python_tests", False, f"the task's tests do not parse: {exc.msg} (line {exc.lineno})")
    if not asserts:
        return Verdict("python_tests", False, "the task has no assert statements to run")
    # Not run as __main__ (a solution's `if __name__ == "__main__":` block stays out of the way), and
    # the tests must reach the end: code that exits early has not passed them.
    done = f"teachgraph-tests-finished-{secrets.token_hex(8)}"
    result = run_python(f"{code}\n\n# ---- tests ----\n{tests}\nprint({done!r})\n", Limits(seconds=10),
                        run_name="solution")
    if result.ok and done in result.stdout:
        return Verdict("python_tests", True, detail=f"{asserts} asserts passed ({result.isolation})")
    if result.ok:
        return Verdict("python_tests", False, "the program exited before its tests finished (remove sys.exit calls)",
                   detail="exited early")
    return Verdict("python_tests", False, f"the code failed its tests: {result.explain()}",
                   detail=result.status)


_ARITHMETIC = re.compile(r"^[\d\s.+\-*/()eE,_%]+$")


@check("python_compute", extras=("result",))
def python_compute(item: dict, response: dict) -> Verdict:
    """Evaluate the reply's arithmetic expression (response["calculation"]) in the sandbox; its value
    becomes `result` in the sample, so the number the sample states is the number computed."""
    expression = response.get("calculation", "").strip().rstrip("=").strip()
    if not expression:
        return Verdict("python_compute", False, "calculation is empty: give one arithmetic expression")
    if not _ARITHMETIC.match(expression.replace("**", "*")):
        return Verdict("python_compute", False,
                       f"calculation {expression!r} must be plain arithmetic (numbers, + - * / ** and brackets)")
    result = run_python(f"print(repr(float(({expression.replace(',', '')}))))", Limits(seconds=5))
    if not result.ok:
        return Verdict("python_compute", False, f"the calculation did not evaluate: {result.explain()}")
    value = float(result.stdout.strip())
    if not math.isfinite(value):
        return Verdict("python_compute", False, "the calculation is not a finite number")
    return Verdict("python_compute", True, extras={"result": _readable(value)}, detail=f"= {value!r}")


def _readable(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3g}".replace("e+0", "e").replace("e+", "e")
    if magnitude >= 1000:  # three significant digits, with thousands separators: 123,000
        return f"{round(value, 2 - int(math.floor(math.log10(magnitude)))):,.0f}"
    return f"{value:.3g}"


@check("choice_key")
def choice_key(item: dict, response: dict) -> Verdict:
    """The answer agent must arrive at the letter the question's writer marked right (a
    self-consistency filter: disagreement means the question or the answer is wrong)."""
    key, chosen = item.get("answer_key", "").strip().upper(), response.get("answer", "").strip().upper()
    if key and chosen == key:
        return Verdict("choice_key", True)
    return Verdict("choice_key", False, f"answer {chosen or '(none)'} is not the correct choice; "
                                        "re-read the question and every option before answering")


@check("label_in_set")
def label_in_set(item: dict, response: dict) -> Verdict:
    labels = [label.strip() for label in re.split(r"[,;\n|]", item.get("labels", "")) if label.strip()]
    chosen = [label.strip() for label in re.split(r"[,;|]", response.get("label", "")) if label.strip()]
    allowed = {label.lower() for label in labels}
    unknown = [label for label in chosen if label.lower() not in allowed]
    if chosen and not unknown:
        return Verdict("label_in_set", True)
    return Verdict("label_in_set", False,
                   f"label {', '.join(unknown) or '(none)'} is not one of the allowed labels: {', '.join(labels)}")


_ELEMENT = re.compile(r"\[(\d+)\]")
_ACTION = re.compile(r'^\s*(?:\d+[.)]\s*)?(?:click \[(\d+)\]|type \[(\d+)\] ".*"|select \[(\d+)\] ".*"'
                     r'|scroll (?:up|down)|answer ".*")\s*$', re.I)


@check("web_actions")
def web_actions(item: dict, response: dict) -> Verdict:
    """Every line is an action of the grammar the prompt gives, on an element that is on the page."""
    on_page = set(_ELEMENT.findall(item.get("content", "")))
    lines = [line for line in response.get("actions", "").splitlines() if line.strip()]
    bad = [line.strip() for line in lines if not _ACTION.match(line)]
    if not lines or bad:
        shown = f"; not an action: {bad[0][:80]!r}" if bad else ""
        return Verdict("web_actions", False, 'write one action per line: click [id], type [id] "text", '
                                             f'select [id] "option", scroll down, or answer "..."{shown}')
    used = [n for line in lines for n in _ACTION.match(line).groups() if n]
    missing = sorted(set(used) - on_page, key=int)
    if missing:
        return Verdict("web_actions", False, f"elements {', '.join('[' + m + ']' for m in missing)} "
                                             "are not on the page; use only the numbered elements shown")
    return Verdict("web_actions", True)


@check("tool_arguments")
def tool_arguments(item: dict, response: dict) -> Verdict:
    """Tool calls must pass a JSON object of known parameters, with every required one present."""
    if response.get("action") != "call_tools":
        return Verdict("tool_arguments", True, detail=response.get("action", "final reply"))
    if not response.get("calls"):
        return Verdict("tool_arguments", False, "call_tools needs at least one call")
    apis = {api["name"]: api for api in item.get("apis", [])}
    offered = set(item.get("tools") or ())
    problems = []
    for call in response["calls"]:
        if call["name"] not in offered:
            problems.append(f"{call['name']} is not one of the tools given ({', '.join(sorted(offered)) or 'none'})")
            continue
        try:
            args = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError:
            problems.append(f"{call['name']}: arguments are not valid JSON")
            continue
        if not isinstance(args, dict):
            problems.append(f"{call['name']}: arguments must be a JSON object")
            continue
        api = apis.get(call["name"])
        if api is None:
            continue
        params = {p["name"]: p for p in api["parameters"]}
        unknown = sorted(set(args) - set(params))
        missing = sorted(n for n, p in params.items() if p["required"] and n not in args)
        if unknown:
            problems.append(f"{call['name']}: unknown parameters {unknown}")
        if missing:
            problems.append(f"{call['name']}: missing required {missing} (ask the user for them instead of calling)")
    if problems:
        return Verdict("tool_arguments", False, "; ".join(problems))
    return Verdict("tool_arguments", True)

"""Skills are data: each folder here holds skill.toml (definition), taxonomy.toml (task types)
and prompts.toml (agent prompts). The graph that runs a skill is named in skill.toml."""

from __future__ import annotations

import hashlib
import importlib
import sys
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Callable

from pydantic import ValidationError

from teachgraph.errors import UsageError
from teachgraph.skills.spec import Rubric, SkillSpec, first_problem

SKILLS_DIR = Path(__file__).parent


class SkillError(UsageError):
    pass


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    guidance: str = ""
    context_op: str | None = None
    transformations: tuple[str, ...] = ()     # empty: fits content from every transformation

    def fits(self, transformation: str | None) -> bool:
        return not self.transformations or transformation in self.transformations


@dataclass(frozen=True)
class Transformation:
    """A content transformation agent: turns a raw seed into the form the skill's tasks need."""

    name: str
    description: str
    kinds: tuple[str, ...] = ("text",)          # seed kinds it can take: "text", "code"

    @property
    def is_identity(self) -> bool:
        return self.name == "identity"


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str = ""
    max_tokens: int | None = None   # this agent's reply cap; small caps stop runaway output early
    assistant: str = ""             # [sample] only: how the answer's fields become the assistant turn
    source: Path | None = None      # the prompts.toml it came from (for errors)

    def placeholders(self) -> dict[str, set[str]]:
        """The $names each template uses, by part."""
        return {part: set(Template(text).get_identifiers())
                for part, text in (("system", self.system), ("user", self.user), ("assistant", self.assistant))}

    def render(self, **values: Any) -> tuple[str, str]:
        # safe_substitute: seed text may legitimately contain "$" and must never break a prompt.
        return (Template(self.system).safe_substitute(values),
                Template(self.user).safe_substitute(values))


@dataclass(frozen=True)
class Skill:
    spec: SkillSpec                 # skill.toml, validated (skills/spec.py)
    taxonomy: tuple[TaskType, ...]
    prompts: dict[str, Prompt]
    transformations: tuple[Transformation, ...] = ()
    rubric: Rubric | None = None    # what the LLM judge scores against (rubric.toml)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def split(self) -> str:
        return self.spec.split

    @property
    def graph(self) -> str:
        return self.spec.graph

    def transformations_for(self, kind: str) -> tuple[Transformation, ...]:
        return tuple(t for t in self.transformations if kind in t.kinds)

    def types_for(self, transformation: str | None) -> list[TaskType]:
        """The task types that fit material from `transformation` (all of them if none is routed to it)."""
        return [t for t in self.taxonomy if t.fits(transformation)] or list(self.taxonomy)

    def accepts(self, kind: str) -> bool:
        return not self.transformations or bool(self.transformations_for(kind))

    def transformation(self, name: str) -> Transformation:
        for item in self.transformations:
            if item.name == name:
                return item
        raise SkillError(f"skill {self.name!r} has no transformation {name!r}")

    def assigner(self) -> "Assigner":
        return Assigner(self)

    def task_type(self, name: str) -> TaskType:
        for task in self.taxonomy:
            if task.name == name:
                return task
        raise SkillError(f"skill {self.name!r} has no task type {name!r}")

    def prompt(self, agent: str) -> Prompt:
        try:
            return self.prompts[agent]
        except KeyError:
            raise SkillError(f"skill {self.name!r} has no prompt for agent {agent!r}") from None

    def graph_module(self) -> Any:
        """The module that builds this skill's graph (it also declares its agents' prompt inputs)."""
        return importlib.import_module(self.graph.partition(":")[0])

    def builder(self) -> Callable[["Skill"], Any]:
        return getattr(self.graph_module(), self.graph.partition(":")[2])

    def build_graph(self):
        """The uncompiled StateGraph for this skill."""
        return self.builder()(self)


class Assigner:
    """Deals each seed a transformation and a task type when a run registers its seeds.

    The transformation is picked at random among those that take the seed's kind (the paper picks
    one at random), but seeded by the seed id, so the choice never changes. The task type is the
    one dealt least so far in the run among those that fit that transformation (ties: taxonomy
    order), so the whole taxonomy is covered evenly across transformations. A round-robin per
    transformation restarted for each one: 13 seeds over 10 transformations used 4 of 43 types.
    A run deals all its seeds when it collects them, and a run killed while collecting collects again
    from scratch, so the counts start at zero; `--target` deals seeds again as they start, from the
    counts in the store (teachgraph/mix.py Target)."""

    def __init__(self, skill: Skill):
        self.skill = skill
        self.dealt: dict[str, int] = {t.name: 0 for t in skill.taxonomy}

    def __call__(self, seed_id: str, kind: str) -> tuple[str | None, str | None]:
        """(transformation, task type) for a seed; (None, None) when the skill cannot use its kind."""
        if not self.skill.transformations:      # a skill with its own content step (rag)
            transformation = None
        else:
            choices = self.skill.transformations_for(kind)
            if not choices:
                return None, None
            digest = hashlib.sha256(f"{self.skill.name}:{seed_id}".encode()).digest()
            transformation = choices[int.from_bytes(digest[:8], "big") % len(choices)].name
        fitting = self.skill.types_for(transformation)
        task = min(fitting, key=lambda t: self.dealt[t.name])   # min keeps the first of equals: taxonomy order
        self.dealt[task.name] += 1
        return transformation, task.name


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SkillError(f"missing {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SkillError(f"{path}: {exc}") from None


def _load_transformations(path: Path) -> tuple[Transformation, ...]:
    entries = _read_toml(path).get("transformations", [])
    out: list[Transformation] = []
    for entry in entries:
        name = str(entry.get("name", "")).strip()
        if not name or not str(entry.get("description", "")).strip():
            raise SkillError(f"{path}: every transformation needs a name and a description")
        if name in {t.name for t in out}:
            raise SkillError(f"{path}: duplicate transformation {name!r}")
        kinds = tuple(entry.get("kinds", ["text"]))
        if not kinds or set(kinds) - {"text", "code"}:
            raise SkillError(f"{path}: transformation {name!r}: kinds must be text and/or code")
        out.append(Transformation(name=name, description=entry["description"].strip(), kinds=kinds))
    return tuple(out)


def _load_taxonomy(path: Path, transformations: tuple[Transformation, ...] = ()) -> tuple[TaskType, ...]:
    known = {t.name for t in transformations}
    types = _read_toml(path).get("types", [])
    if not types:
        raise SkillError(f"{path}: no task types")
    seen: set[str] = set()
    out = []
    for entry in types:
        name = str(entry.get("name", "")).strip()
        if not name or not str(entry.get("description", "")).strip():
            raise SkillError(f"{path}: every task type needs a name and a description")
        if name in seen:
            raise SkillError(f"{path}: duplicate task type {name!r}")
        seen.add(name)
        routed = tuple(entry.get("transformations", ()))
        if set(routed) - known:
            raise SkillError(f"{path}: task type {name!r} names unknown transformations "
                             f"{sorted(set(routed) - known)}")
        out.append(TaskType(name=name, description=entry["description"].strip(),
                            guidance=entry.get("guidance", "").strip(), context_op=entry.get("context_op"),
                            transformations=routed))
    for transformation in transformations:
        if not any(t.fits(transformation.name) for t in out):
            raise SkillError(f"{path}: no task type fits transformation {transformation.name!r}")
    return tuple(out)


def available() -> list[str]:
    return sorted(p.parent.name for p in SKILLS_DIR.glob("*/skill.toml"))


def aliases() -> dict[str, str]:
    """Other names a skill answers to: its public split name (`rc`, `code_`, `follow_up`, ...)
    and the short names in its skill.toml."""
    out: dict[str, str] = {}
    for name in available():
        definition = _read_toml(SKILLS_DIR / name / "skill.toml")
        for alias in [definition.get("split", name), *definition.get("aliases", [])]:
            if alias != name:
                out[alias] = name
    return out


def resolve(name: str) -> str:
    """The skill folder for a name or alias; SkillError listing the known skills otherwise."""
    if (SKILLS_DIR / name / "skill.toml").is_file():
        return name
    known = aliases()
    if name in known:
        return known[name]
    raise SkillError(f"unknown skill {name!r} (known: {', '.join(available()) or 'none'})")


SHARED_PROMPTS = SKILLS_DIR / "prompts.toml"   # defaults every skill inherits, agent by agent


def _prompts(path: Path) -> dict[str, Prompt]:
    sources = [SHARED_PROMPTS, path] if SHARED_PROMPTS.is_file() else [path]
    merged = {agent: (source, spec) for source in sources for agent, spec in _read_toml(source).items()}
    return {agent: Prompt(system=spec.get("system", ""), user=spec.get("user", ""),
                          max_tokens=spec.get("max_tokens"), assistant=spec.get("assistant", ""), source=source)
            for agent, (source, spec) in merged.items()}


def load_spec(path: Path, folder_name: str) -> SkillSpec:
    """skill.toml validated: an unknown or misspelt key stops the skill with one line."""
    definition = _read_toml(path)
    try:
        return SkillSpec.model_validate({"name": folder_name, "title": folder_name, "split": folder_name,
                                         **definition})
    except ValidationError as exc:
        raise SkillError(f"{path}: {first_problem(exc)}") from None


SHARED_RUBRIC = SKILLS_DIR / "rubric.toml"      # the judge's rubric for a skill without its own


def rubric_for(name: str | None) -> Rubric:
    """The judge's rubric: skills/<name>/rubric.toml, else the shared one (also for rows of no known
    skill, as `filter` meets them). Validated like skill.toml: an unknown key is one line."""
    own = SKILLS_DIR / name / "rubric.toml" if name and (SKILLS_DIR / name / "skill.toml").is_file() else None
    path = own if own is not None and own.is_file() else SHARED_RUBRIC
    try:
        return Rubric.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise SkillError(f"{path}: {first_problem(exc)}") from None


def check_placeholders(skill: Skill) -> None:
    """Every $placeholder in the prompts the skill's graph renders must be one its inputs fill: an
    unfilled one would reach the model as a literal "$name" (string.Template's safe_substitute)."""
    for agent, parts in skill.graph_module().prompt_inputs(skill.spec).items():
        prompt = skill.prompt(agent)
        for part, used in prompt.placeholders().items():
            unknown = sorted(used - parts.get(part, set()))
            if unknown:
                known = ", ".join(sorted(parts.get(part, set()))) or "none"
                raise SkillError(f"{prompt.source}: [{agent}] {part} uses ${unknown[0]}, which no input fills "
                                 f"(it is given: {known})")


def check_gates(skill: Skill) -> None:
    """skill.toml [gates]: every gate and setting named must exist. The graph's gate node type checks
    them (nodes/gates.py; skills sit below the gates in the layers, so the graph module is asked, as for
    placeholders)."""
    if not skill.spec.gates:
        return
    check = getattr(skill.graph_module(), "check_gates", None)
    if check is None:
        raise SkillError(f"skill {skill.name}: [gates] is set but its graph ({skill.graph}) runs no gates")
    check(skill)


def load(name: str) -> Skill:
    name = resolve(name)
    folder = SKILLS_DIR / name
    spec = load_spec(folder / "skill.toml", name)
    transformations = _load_transformations(folder / "taxonomy.toml")
    skill = Skill(spec=spec, taxonomy=_load_taxonomy(folder / "taxonomy.toml", transformations),
                  prompts=_prompts(folder / "prompts.toml"), transformations=transformations,
                  rubric=rubric_for(name))
    check_placeholders(skill)
    check_gates(skill)
    return skill


class _SkillsModule(types.ModuleType):
    """`teachgraph.skills()`: the package itself answers the API's "which skills are there"."""

    def __call__(self) -> list[Skill]:
        """Every skill, loaded (name, split, taxonomy, description ...)."""
        return [load(name) for name in available()]


sys.modules[__name__].__class__ = _SkillsModule

"""Skills are data: each folder here holds skill.toml (definition), taxonomy.toml (task types)
and prompts.toml (agent prompts). The graph that runs a skill is named in skill.toml."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Callable

SKILLS_DIR = Path(__file__).parent


class SkillError(ValueError):
    pass


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    guidance: str = ""
    context_op: str | None = None


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str = ""
    max_tokens: int | None = None   # this agent's reply cap; small caps stop runaway output early

    def render(self, **values: Any) -> tuple[str, str]:
        # safe_substitute: seed text may legitimately contain "$" and must never break a prompt.
        return (Template(self.system).safe_substitute(values),
                Template(self.user).safe_substitute(values))


@dataclass(frozen=True)
class Skill:
    name: str
    title: str
    description: str
    split: str
    graph: str
    taxonomy: tuple[TaskType, ...]
    prompts: dict[str, Prompt]
    settings: dict[str, Any] = field(default_factory=dict)

    def task_type(self, name: str) -> TaskType:
        for task in self.taxonomy:
            if task.name == name:
                return task
        raise SkillError(f"skill {self.name!r} has no task type {name!r}")

    def task_for(self, ordinal: int) -> TaskType:
        """Round-robin over the taxonomy, so a corpus covers every type evenly."""
        return self.taxonomy[ordinal % len(self.taxonomy)]

    def prompt(self, agent: str) -> Prompt:
        try:
            return self.prompts[agent]
        except KeyError:
            raise SkillError(f"skill {self.name!r} has no prompt for agent {agent!r}") from None

    def builder(self) -> Callable[["Skill"], Any]:
        module_name, _, attr = self.graph.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def build_graph(self):
        """The uncompiled StateGraph for this skill."""
        return self.builder()(self)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SkillError(f"missing {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SkillError(f"{path}: {exc}") from None


def _load_taxonomy(path: Path) -> tuple[TaskType, ...]:
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
        out.append(TaskType(name=name, description=entry["description"].strip(),
                            guidance=entry.get("guidance", "").strip(), context_op=entry.get("context_op")))
    return tuple(out)


def available() -> list[str]:
    return sorted(p.parent.name for p in SKILLS_DIR.glob("*/skill.toml"))


def load(name: str) -> Skill:
    folder = SKILLS_DIR / name
    if not (folder / "skill.toml").is_file():
        known = ", ".join(available()) or "none"
        raise SkillError(f"unknown skill {name!r} (known: {known})")
    definition = _read_toml(folder / "skill.toml")
    prompts = {agent: Prompt(system=spec.get("system", ""), user=spec.get("user", ""),
                             max_tokens=spec.get("max_tokens"))
               for agent, spec in _read_toml(folder / "prompts.toml").items()}
    settings = {k: v for k, v in definition.items()
                if k not in {"name", "title", "description", "split", "graph"}}
    return Skill(name=definition.get("name", name), title=definition.get("title", name),
                 description=definition.get("description", ""), split=definition.get("split", name),
                 graph=definition["graph"], taxonomy=_load_taxonomy(folder / "taxonomy.toml"),
                 prompts=prompts, settings=settings)

"""Which skill each seed of a run goes to.

A single-skill run gives every seed to its skill (a seed the skill cannot use is still given to it,
and the skill rejects it with the reason). `graph run all --mix M` apportions seeds by M's weights:
each seed goes to the skill furthest below its share among the skills that can use the seed's kind,
so the counts track the weights as seeds stream in and code seeds go where code is wanted."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from teachgraph import skills
from teachgraph.skills import Skill, SkillError

MIXES_FILE = skills.SKILLS_DIR / "mixes.toml"


def named_mixes() -> dict[str, dict[str, float]]:
    with MIXES_FILE.open("rb") as fh:
        mixes = tomllib.load(fh)
    mixes["uniform"] = {name: 1.0 for name in skills.available()}
    return mixes


def load_mix(spec: str) -> dict[str, float]:
    """Weights per skill from a mix name (orca, uniform) or a TOML/JSON file of skill = weight."""
    mixes = named_mixes()
    if spec in mixes:
        raw = mixes[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise SkillError(f"unknown mix {spec!r}: use {', '.join(sorted(mixes))} or a TOML/JSON file")
        try:
            raw = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SkillError(f"mix file {path}: {exc}") from None
    weights: dict[str, float] = {}
    for name, weight in raw.items():
        # TOML and JSON both allow inf and nan: nan > 0 is false (the skill vanished) and inf broke the shares
        if (not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight)
                or weight < 0):
            raise SkillError(f"mix {spec}: weight of {name!r} must be a finite number >= 0, not {weight!r}")
        if weight > 0:
            skill = skills.resolve(name)
            weights[skill] = weights.get(skill, 0.0) + float(weight)
    if not weights:
        raise SkillError(f"mix {spec}: no skill has a weight above 0")
    if not math.isfinite(sum(weights.values())):
        raise SkillError(f"mix {spec}: the weights add up to more than a float holds; use smaller numbers")
    return weights


class Dealer:
    """Deals seeds, in order, to skills by weight; for each, the skill's transformation and task type."""

    def __init__(self, loaded: list[Skill], weights: dict[str, float] | None = None):
        self.skills = {skill.name: skill for skill in loaded}
        total = sum(weights.values()) if weights else 1.0
        self.share = {name: (weights[name] / total if weights else 1.0) for name in self.skills}
        self.dealt = {name: 0 for name in self.skills}
        self.assigners = {name: skill.assigner() for name, skill in self.skills.items()}

    def __call__(self, seed_id: str, kind: str) -> tuple[str, str | None, str | None]:
        usable = [name for name, skill in self.skills.items() if skill.accepts(kind)] or list(self.skills)
        share = sum(self.share[name] for name in usable)
        n = sum(self.dealt[name] for name in usable) + 1
        # the skill furthest below its share of the seeds dealt so far (ties: the bigger share, then name)
        name = max(usable, key=lambda s: (self.share[s] / share * n - self.dealt[s], self.share[s], s))
        self.dealt[name] += 1
        transformation, task_type = self.assigners[name](seed_id, kind)
        return name, transformation, task_type

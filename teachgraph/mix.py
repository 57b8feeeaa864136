"""Which skill each seed of a run goes to.

A single-skill run gives every seed to its skill (a seed the skill cannot use is still given to it,
and the skill rejects it with the reason). `graph run all --mix M` apportions seeds by M's weights:
each seed goes to the skill furthest below its share among the skills that can use the seed's kind,
so the counts track the weights as seeds stream in and code seeds go where code is wanted."""

from __future__ import annotations

import asyncio
import json
import math
import tomllib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
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


class Target:
    """`--target N`: run seeds until every task type has N kept samples, or the seeds run out.

    A seed is dealt again as it starts (only then: a started seed's graph has its task type): it takes
    the fitting type furthest below N (kept samples, from the store, plus the seeds of that type
    running now; ties: its own type, then taxonomy order). When
    every fitting type is full the seed is left unused. When the only types still short are short
    just because seeds of theirs are running, the seed waits for one of them to end: if it is
    rejected, the seed is still needed; counting running seeds as done would stop short.

    Running seeds are counted from the store (their leases), not only in this process, and a seed is
    dealt and its type recorded in one write transaction (the `target` lock): so Ray workers, each
    with its own Target, deal as one process would. A wait for a seed running elsewhere looks again
    every POLL_S seconds (no event crosses processes)."""

    POLL_S = 0.5

    def __init__(self, registry: Registry, run_id: str, n: int, started: set[str] = frozenset(), *,
                 focus: Iterable[str] = (), used: set[str] = frozenset(), avoid: set[str] = frozenset()):
        """`focus`: only these task types are wanted (a repair run: the student's weakest); `used`: seed ids
        an earlier run had, left unused here (a repair run draws new seeds); `avoid`: seed ids never dealt
        (a student's held-out seeds: their documents must not reach its training data)."""
        self.registry, self.run_id, self.n = registry, run_id, n
        self.focus, self.used, self.avoid = set(focus), set(used), set(avoid)
        self.running: dict[str, tuple[str, str]] = {}    # seed id -> (skill, task type), in this process
        self._ended: asyncio.Event | None = None
        # seeds a resumed run will continue (they have checkpoints) count as running from the start:
        # a seed before them in the corpus's order must not be dealt the type they already hold
        for seed_id in started:
            try:
                row = registry.seed(run_id, seed_id)
            except KeyError:                 # a thread left by a collection cut short
                continue
            if row["status"] not in ("accepted", "rejected"):
                self.running[seed_id] = (row["skill"], row["task_type"])

    def _in_flight(self, skill: str, seed_id: str) -> Counter:
        here = {s: task for s, (name, task) in self.running.items() if name == skill}
        # a resumed seed counted here from the start may have ended on another worker: the store says
        for ended in set(here) - self.registry.unfinished_ids(self.run_id, list(here)):
            del here[ended]
            self.running.pop(ended, None)
        anywhere = {**here, **self.registry.leased_task_types(self.run_id, skill)}
        anywhere.pop(seed_id, None)          # the seed being dealt holds its own lease already
        return Counter(anywhere.values())

    async def deal(self, seed: dict, skill: Skill) -> str | None:
        """The seed's task type now, recorded in the store, or None: not needed (every type it fits
        has N kept samples)."""
        if skill.transformations and not seed.get("transformation"):
            return seed["task_type"]     # the skill cannot use the seed: its graph rejects it, at no cost
        if seed["id"] in self.used or seed["id"] in self.avoid:
            return None
        fitting = [t.name for t in skill.types_for(seed.get("transformation"))
                   if not self.focus or t.name in self.focus]
        if not fitting:
            return None
        while True:
            with self.registry.db.transaction(lock=f"target:{self.run_id}"):
                kept = self.registry.kept_samples(self.run_id, skill.name)
                running = self._in_flight(skill.name, seed["id"])
                open_ = [t for t in fitting if kept.get(t, 0) + running[t] < self.n]
                if open_:
                    # min keeps the first of equals: the seed's own type, then taxonomy order
                    task = min(sorted(open_, key=lambda t: t != seed["task_type"]),
                               key=lambda t: kept.get(t, 0) + running[t])
                    if task != seed["task_type"]:   # recorded before the graph's first checkpoint holds it
                        self.registry.deal_task_type(self.run_id, seed["id"], task)
                    self.running[seed["id"]] = (skill.name, task)
                    return task
            if not any(kept.get(t, 0) < self.n for t in fitting):
                return None
            if self._ended is None:
                self._ended = asyncio.Event()
            try:   # a running seed of a short type ends (here, or elsewhere: looked at again): look again
                await asyncio.wait_for(self._ended.wait(), self.POLL_S)
            except asyncio.TimeoutError:
                pass

    def ended(self, seed_id: str) -> None:
        if self.running.pop(seed_id, None) is not None and self._ended is not None:
            self._ended.set()
            self._ended = None

    def unused_reason(self, skill: Skill, seed: dict) -> str:
        if seed["id"] in self.avoid:
            return "not used: the student is evaluated on this seed (teach's held-out part)"
        if seed["id"] in self.used:
            return "not needed: an earlier run used this seed (a repair run draws new seeds)"
        if self.focus and not any(t.name in self.focus for t in skill.types_for(seed.get("transformation"))):
            return (f"not needed: it fits none of the task types asked for ({', '.join(sorted(self.focus))}); "
                    f"transformation {seed.get('transformation') or '-'}")
        return (f"not needed: every task type it fits already has {self.n} kept samples (--target {self.n}); "
                f"transformation {seed.get('transformation') or '-'}")

"""The gates inside a run (`graph run`): the same gates as `filter`, configured per skill by skill.toml's
[gates] table and per run by its flags, with their state in a file of the run's store.

Which gates run: `degenerate`, `exact_duplicate` and `near_duplicate` unless the skill turns them off;
`decontaminate` when the run names evaluation files (--decontaminate) or the skill does; the paraphrase
gate `semantic_duplicate` with --semantic (or `semantic_duplicate = true` in skill.toml). --no-gates runs none.
A skill.toml value is `true`/`false`, or a table of the gate's settings (the gate's pydantic Settings:
an unknown key or gate is refused when the skill loads).

One store for the whole run, so a multi-skill run deduplicates across its skills. A seed's samples are
judged and admitted in one transaction (`judge_seed`); a sample already admitted is kept again without
a check, so a seed whose gate node ran before a kill -9, but whose outcome was not recorded, is not
dropped as a duplicate of itself on resume."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from teachgraph.gates import semantic as _semantic  # noqa: F401  (registers the gate; torch loads only when used)
from teachgraph.gates.base import GATES, KEEP, ChatSample, SampleError, Verdict, make_gate
from teachgraph.gates.pipeline import DEFAULT_ORDER, Pipeline
from teachgraph.gates.store import GateStore

ON_BY_DEFAULT = ("degenerate", "exact_duplicate", "near_duplicate")
DEDUP_GATES = ("exact_duplicate", "near_duplicate", "semantic_duplicate")   # what an earlier run's samples feed


class GateConfigError(ValueError):
    """A skill.toml [gates] table naming an unknown gate or setting (one line)."""


@dataclass(frozen=True)
class RunFlags:
    """A run's gate flags (runner.Settings keeps them, so a resume gates alike)."""

    enabled: bool = True
    decontaminate: tuple[str, ...] = ()
    semantic: bool = False


def check_table(table: Mapping[str, Any], where: str = "[gates]") -> None:
    """Refuse an unknown gate name or setting in a skill.toml [gates] table."""
    for name, value in table.items():
        if name not in GATES:
            raise GateConfigError(f"{where}: unknown gate {name!r} (known: {', '.join(sorted(GATES))})")
        if isinstance(value, dict):
            try:
                GATES[name].Settings(**value)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                raise GateConfigError(f"{where}.{name}.{key}: {problem}") from None


def chosen(table: Mapping[str, Any], flags: RunFlags) -> dict[str, dict[str, Any]]:
    """gate name -> settings, in the pipeline's order, for one skill's [gates] table and the run's flags."""
    if not flags.enabled:
        return {}
    wanted: dict[str, dict[str, Any]] = {name: {} for name in ON_BY_DEFAULT}
    for name, value in table.items():
        if value is False:
            wanted.pop(name, None)
        else:
            wanted[name] = dict(value) if isinstance(value, dict) else {}
    if flags.semantic:
        wanted.setdefault("semantic_duplicate", {})
    if flags.decontaminate:
        files = [*wanted.get("decontaminate", {}).get("files", []), *flags.decontaminate]
        wanted["decontaminate"] = {**wanted.get("decontaminate", {}), "files": [Path(f) for f in files]}
    if "decontaminate" in wanted and not wanted["decontaminate"].get("files"):
        del wanted["decontaminate"]    # nothing to compare with
    order = [*DEFAULT_ORDER, *sorted(set(wanted) - set(DEFAULT_ORDER))]
    return {name: wanted[name] for name in order if name in wanted}


@dataclass
class RunGates:
    """One run's gates: its GateStore (the dedup indexes of what the run kept) and a pipeline per skill."""

    store: GateStore
    flags: RunFlags
    _pipelines: dict[str, Pipeline] = field(default_factory=dict)
    _gates: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, store: GateStore, flags: RunFlags) -> "RunGates":
        with store.transaction():
            store.table("run", "admitted").create({"id": str}, pk="id", if_not_exists=True)
            store.table("run", "sources").create({"run_id": str}, pk="run_id", if_not_exists=True)
        return cls(store, flags)

    def pipeline(self, skill: str, table: Mapping[str, Any]) -> Pipeline:
        """The skill's pipeline (built once; every skill's gates share the run's store)."""
        if skill not in self._pipelines:
            gates = []
            for name, settings in chosen(table, self.flags).items():
                # skills with the same settings share one gate: the semantic gate holds its index in memory
                key = json.dumps([name, settings], sort_keys=True, default=str)
                if key not in self._gates:
                    self._gates[key] = make_gate(name, self.store, **settings)
                gates.append(self._gates[key])
            self._pipelines[skill] = Pipeline(gates, self.store)
        return self._pipelines[skill]

    def judge_seed(self, pipeline: Pipeline, samples: list[dict]) -> list[Verdict]:
        """A verdict for each of a seed's samples, in order; the kept ones are admitted, all in one commit."""
        verdicts = []
        # the write lock from the first check to the commit: a process sharing the store (an executor
        # on several processes) cannot admit a copy between this seed's check and its admit
        with self.store.exclusive():
            for body in samples:
                if self._admitted(body["id"]):
                    verdicts.append(KEEP)
                    continue
                try:
                    verdict = pipeline.judge(ChatSample.from_row(body, body["id"]))
                except SampleError as exc:
                    verdict = Verdict.drop("format", str(exc))
                if verdict.keep:
                    self._admit_id(body["id"])
                verdicts.append(verdict)
        return verdicts

    def learn_run(self, pipeline: Pipeline, run_id: str, samples: Iterable[tuple[str, str]]) -> int:
        """--dedup-against: admit an earlier run's kept samples to the dedup gates, once per run (a
        resume does not add them again). Returns how many were added now."""
        sources = self.store.table("run", "sources")
        if list(self.store.db.query(f'SELECT 1 FROM "{sources.name}" WHERE run_id = ?', [run_id])):
            return 0
        dedup = [g for g in pipeline.gates if g.name in DEDUP_GATES]
        added = 0
        with self.store.transaction():
            for sample_id, body in samples:
                if self._admitted(sample_id):
                    continue
                try:
                    sample = ChatSample.from_row(json.loads(body), sample_id)
                except (SampleError, ValueError):
                    continue
                for gate in dedup:
                    gate.admit(sample)
                self._admit_id(sample_id)
                added += 1
            self.store.db.execute(f'INSERT INTO "{sources.name}" (run_id) VALUES (?)', [run_id])
        return added

    def _admitted(self, sample_id: str) -> bool:
        admitted = self.store.table("run", "admitted").name
        return bool(list(self.store.db.query(f'SELECT 1 FROM "{admitted}" WHERE id = ?', [sample_id])))

    def _admit_id(self, sample_id: str) -> None:
        admitted = self.store.table("run", "admitted").name
        self.store.db.execute(f'INSERT INTO "{admitted}" (id) VALUES (?) ON CONFLICT DO NOTHING', [sample_id])

    def close(self) -> None:
        self.store.close()

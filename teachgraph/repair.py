"""`teach --repair`: find the task types the student still fails, generate for them, teach again, and
check that aiming helped more than the same amount of data for task types drawn at random.

A round: the student taught on the data so far is evaluated per task type on the held-out part; the
`types` weakest (highest held-out loss after training) become a repair run's `--target` (N kept samples
each), drawn from seeds no earlier run used. The control run is made the same way for as many task types
of the same skill drawn at random, so both arms add about the same number of samples from the same
unused seeds. The student is taught again from the same base, once on the data plus the repair runs and
once on the data plus the control runs; both are evaluated on the same held-out items (the new runs'
samples only ever train: teach's `train_only`), so the difference on the aimed task types is the effect
of aiming. `rounds` repeats it, each round aiming at what the repaired student is weakest at then."""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from teachgraph import api, skills
from teachgraph.errors import UsageError
from teachgraph.runner import Home, Settings
from teachgraph.teach import Teaching, TeachSettings, TeachError, teach


@dataclass
class RepairSettings:
    rounds: int = 1
    types: int = 3              # how many of the weakest task types a round aims at
    per_type: int = 4           # kept samples each aimed type gets (the repair run's --target)
    seed: int = 0               # the control's random draw of task types
    base_url: Optional[str] = None   # the generator for the new runs; None: the first run's own
    model: Optional[str] = None


def _row(teaching: Teaching, skill: str, task_type: str) -> Optional[dict]:
    return next((r["after"] for r in teaching.rows() if (r["skill"], r["task_type"]) == (skill, task_type)), None)


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def repair(run_ids: list[str], out: Path, settings: TeachSettings, repairing: RepairSettings, *, home: Home,
           progress=None, run: Callable[..., api.Run] = api.run, **run_options) -> dict:
    """Teach, then `repairing.rounds` rounds of repair against a random control; writes DIR/repair.json
    and returns it. `run_options` go to every generation run (tests pass a scripted `llm`)."""
    if repairing.rounds < 1 or repairing.types < 1 or repairing.per_type < 1:
        raise TeachError("--rounds-of-repair, --repair-types and --repair-target must be at least 1")
    registry = home.registry()
    first_run = registry.run(run_ids[0])
    if first_run is None:
        raise TeachError(f"no run {run_ids[0]!r} (see: python cli.py runs list)")
    source = Settings(**first_run["settings"])
    if source.skill == "all":
        raise TeachError("--repair aims one skill's task types: give runs of one skill, not `graph run all`")
    skill = skills.load(source.skill)
    base_url = repairing.base_url or source.base_url
    model = repairing.model or (source.model if base_url else None)
    rng = random.Random(repairing.seed)

    current = teach(registry, run_ids, out / "round-0", settings, progress=progress)
    report: dict = {"skill": skill.name, "baseline": current.report()["after"], "rounds": []}
    repair_runs: list[str] = []
    control_runs: list[str] = []
    for number in range(1, repairing.rounds + 1):
        aimed = [w["task_type"] for w in current.weakest() if w["skill"] == skill.name][:repairing.types]
        if not aimed:
            raise TeachError("no held-out task type to aim at (too few held-out samples?)")
        others = [t.name for t in skill.taxonomy]
        drawn = rng.sample(others, min(len(aimed), len(others)))
        used = [*run_ids, *repair_runs, *control_runs]
        made = {}
        for arm, types in (("repair", aimed), ("control", drawn)):
            try:
                # new seeds first; a corpus with none left is used again, its held-out seeds never
                generated = run(skill.name, source.seeds, target=repairing.per_type, focus=types, fresh_after=used,
                                avoid_seeds=current.split.heldout_seeds,
                                rounds=source.rounds, base_url=base_url, model=model, home=home,
                                run_id=f"{run_ids[0]}-{arm}{number}-{secrets.token_hex(2)}", **run_options)
            except UsageError as exc:
                raise TeachError(f"the {arm} run of round {number} could not start: {exc}") from None
            made[arm] = generated
        repair_runs.append(made["repair"].id)
        control_runs.append(made["control"].id)
        repaired = teach(registry, run_ids, out / f"round-{number}" / "repair", settings, train_only=repair_runs,
                         progress=progress)
        controlled = teach(registry, run_ids, out / f"round-{number}" / "control", settings,
                           train_only=control_runs, progress=progress)
        rows = []
        for task_type in aimed:
            before, after, control = (_row(t, skill.name, task_type) for t in (current, repaired, controlled))
            rows.append({"task_type": task_type, "before": before, "after_repair": after, "after_control": control})
        gain = {"repair": _mean([r["before"]["loss"] - r["after_repair"]["loss"] for r in rows]),
                "control": _mean([r["before"]["loss"] - r["after_control"]["loss"] for r in rows])}
        report["rounds"].append({
            "round": number, "aimed": aimed, "control_types": drawn,
            "repair_run": made["repair"].id, "control_run": made["control"].id,
            "new_samples": {"repair": made["repair"].counts["samples"], "control": made["control"].counts["samples"]},
            "aimed_types": rows,
            "mean_loss_drop_on_aimed": gain,
            # lower held-out loss is better: aiming helped if its drop beats the control's on the same types
            "repair_helped_more": (gain["repair"] is not None and gain["control"] is not None
                                   and gain["repair"] > gain["control"]),
            "overall_after": {"repair": repaired.report()["after"], "control": controlled.report()["after"]},
        })
        current = repaired
    out.mkdir(parents=True, exist_ok=True)
    (out / "repair.json").write_text(json.dumps(report, indent=2) + "\n")
    return report

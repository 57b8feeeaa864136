"""A small rag run for the review tests: with one seed at a time, its five seeds end accepted, accepted,
rejected (generate's replies are junk three times), failed (the model raises at generate), accepted."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_in_process
from tests.rag_script import RagScript, agent_of

RUN_ID = "rv"


class ReviewScript(RagScript):
    def __init__(self) -> None:
        super().__init__()
        self.generated = 0

    def reply(self, system: str, user: str) -> str:
        if agent_of(system, user) == "generate":
            self.generated += 1
            if self.generated in (3, 4, 5):
                return "no JSON from me"
            if self.generated == 6:
                raise RuntimeError("the model fell over")
        return super().reply(system, user)


def make_run(tmp_path: Path):
    """(registry, home folder) of the run RUN_ID."""
    registry, _, _ = run_in_process(tmp_path, ReviewScript().reply, limit=5, rounds=1, concurrency=1, run_id=RUN_ID)
    return registry, tmp_path / "home"

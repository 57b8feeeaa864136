"""Resume from every point a kill can leave a seed's thread in: after each checkpoint, with that
superstep's finished tasks saved as pending writes but the next checkpoint not yet written."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

from teachgraph import skills
import teachgraph.runner as runner
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.llm import LLM
from teachgraph.runner import LocalExecutor, Home
from tests.conftest import Tally, run_in_process
from teachgraph.testing.fake_chat import ScriptedChatModel
from tests.rag_script import RagScript


def _checkpoint_ids(db_path) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return [r[0] for r in db.execute(
            "select checkpoint_id from checkpoints where checkpoint_ns = '' order by checkpoint_id")]


def _cut_after(db_path, keep: str) -> None:
    """Forget everything after checkpoint `keep`, but keep the writes its tasks saved."""
    with sqlite3.connect(db_path) as db:
        db.execute("delete from writes where checkpoint_id > ?", [keep])
        db.execute("delete from checkpoints where checkpoint_id > ?", [keep])


def test_resume_from_every_step_boundary(tmp_path, monkeypatch):
    # One seed, run to the end with its checkpoints kept.
    monkeypatch.setattr(runner, "forget_thread", lambda saver, thread: asyncio.sleep(0))
    first = RagScript()
    registry, settings, _ = run_in_process(tmp_path / "full", first.reply, limit=1, rounds=2, concurrency=1)
    total_calls = sum(first.calls.values())
    sample_ids = sorted(i for i, _ in registry.samples("t1"))
    home = Home(tmp_path / "full" / "home")
    checkpoints = _checkpoint_ids(home.checkpoints_path)
    assert len(checkpoints) >= 7 and len(sample_ids) == 2

    for index, keep in enumerate(checkpoints[:-1]):
        work = Home(tmp_path / f"cut{index}")
        shutil.copytree(home.root, work.root)
        _cut_after(work.checkpoints_path, keep)
        reg = Registry(work.registry_path)
        with reg.db.conn:  # the kill came before the seed's outcome was recorded
            reg.db.execute("update seeds set status = 'pending', samples = 0 where run_id = 't1'")
            reg.db.execute("delete from samples where run_id = 't1'")
        again = RagScript()
        llm = LLM(chat=ScriptedChatModel(script=again.reply), model_name="scripted",
                  structured_mode="json_object", max_concurrency=1)
        settings.out = str(work.default_out("t1"))
        asyncio.run(LocalExecutor(reg, work, "t1", skills.load("rag"), llm, settings, Tally()).run())
        counts = reg.counts("t1")
        assert counts["accepted"] == 1 and counts["samples"] == 2, (index, reg.outcomes("t1", "rejected"))
        assert sorted(i for i, _ in reg.samples("t1")) == sample_ids
        redone = sum(again.calls.values())
        assert redone < total_calls or index == 0, f"cut {index}: resume redid every call"
        # calls recorded for the seed = calls saved before the cut + calls made on resume
        assert counts["llm_calls"] == total_calls, (index, counts["llm_calls"], total_calls)

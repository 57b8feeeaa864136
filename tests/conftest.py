from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "corpus" / "sample"
sys.path.insert(0, str(ROOT))

from teachgraph.checkpoints.registry import Registry  # noqa: E402
from teachgraph.client.llm import LLM  # noqa: E402
from teachgraph.runner import LocalExecutor, Home, Settings  # noqa: E402
from teachgraph.mix import Dealer  # noqa: E402
from teachgraph.seeds import collect  # noqa: E402
from teachgraph import skills  # noqa: E402
from teachgraph.testing.fake_chat import ScriptedChatModel  # noqa: E402


@pytest.fixture
def no_proxy(monkeypatch):
    """No HTTP(S) proxy in the environment: a proxy turns the Wire and the aiohttp client off."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class Tally:
    def __init__(self):
        self.done: dict[str, int] = {}

    def seed_done(self, status: str, samples: int) -> None:
        self.done[status] = self.done.get(status, 0) + 1


def run_in_process(tmp_path: Path, script, *, limit: int = 3, rounds: int = 2, concurrency: int = 2,
                   seeds: Path = SAMPLE, run_id: str = "t1"):
    """Run the rag graph over `seeds` with a scripted model; returns (registry, settings, llm)."""
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    skill = skills.load("rag")
    settings = Settings(skill="rag", seeds=[str(seeds)], out=str(home.default_out(run_id)), limit=limit,
                        rounds=rounds, concurrency=concurrency, model="scripted")
    registry.create_run(run_id, "rag", settings.to_json())
    registry.add_corpus(run_id, collect([seeds]), limit=limit, assign=Dealer([skill]), passage_chars=420)
    llm = LLM(chat=ScriptedChatModel(script=script), model_name="scripted", structured_mode="json_object",
              max_concurrency=concurrency)
    asyncio.run(LocalExecutor(registry, home, run_id, skill, llm, settings, Tally()).run())
    return registry, settings, llm


def run_cli(*args: str, home: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TEACHGRAPH_HOME": str(home), "COLUMNS": "200", **(env or {})}
    full_env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT, stdin=subprocess.DEVNULL)

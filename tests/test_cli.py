"""The CLI as a user runs it: subprocesses against a local fake OpenAI-compatible server."""

from __future__ import annotations

import json
import re

import pytest

from teachgraph.client import probe
from tests.conftest import SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript


@pytest.fixture
def fake():
    with FakeOpenAI(responder=RagScript().http_responder) as server:
        yield server


def endpoint(fake) -> list[str]:
    return ["--base-url", fake.base_url, "--model", "fake-model"]


def is_probe(body: dict) -> bool:
    return body["messages"][0]["content"] == probe.SYSTEM


def run_id_of(result) -> str:
    return re.search(r"run id: (\S+)", result.stderr).group(1)


def test_graph_list_names_rag_first_on_its_line(tmp_path):
    result = run_cli("graph", "list", home=tmp_path)
    assert result.returncode == 0
    assert any(line.split("\t")[0] == "rag" for line in result.stdout.splitlines())


def test_graph_show_draws_offline(tmp_path):
    mermaid = run_cli("graph", "show", "rag", home=tmp_path)
    assert mermaid.returncode == 0 and 'suggest -. "suggester has an edit" .-> edit' in mermaid.stdout
    assert 'edit -. "round < max_rounds" .-> suggest' in mermaid.stdout
    assert 'generate["<b>generate</b><br/>seed instruction agent"]' in mermaid.stdout
    ascii_art = run_cli("graph", "show", "rag", "--format", "ascii", home=tmp_path)
    assert ascii_art.returncode == 0 and "| suggest |" in ascii_art.stdout
    assert "edit -> suggest  when round < max_rounds" in ascii_art.stdout
    pytest.importorskip("pygraphviz")
    png = tmp_path / "rag.png"
    result = run_cli("graph", "show", "rag", "--format", "png", "--out", str(png), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_run_writes_samples_and_runs_show_adds_up(tmp_path, fake):
    out = tmp_path / "out.jsonl"
    result = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "5", "--rounds", "2",
                     "--out", str(out), "--run-id", "demo", *endpoint(fake), home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "run id: demo"
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(samples) == 10 and len({s["id"] for s in samples}) == 10
    assert all(s["skill"] == "rag" and [m["role"] for m in s["messages"]] == ["system", "user", "assistant"]
               for s in samples)
    shown = json.loads(run_cli("runs", "show", "demo", "--json", home=tmp_path / "home").stdout)
    counts = shown["counts"]
    assert counts["total"] == 5 == counts["accepted"] + counts["rejected"] + counts["failed"]
    # --structured auto probed the endpoint first (4 tiny requests), then used what it found
    model_calls = [body for body in fake.requests if not is_probe(body)]
    assert fake.request_count - len(model_calls) == 4 and shown["run"]["settings"]["structured"] == "json_schema"
    assert counts["samples"] == 10 and counts["llm_calls"] == len(model_calls)
    assert all(body["response_format"]["type"] == "json_schema" for body in model_calls)
    # every request caps the reply length under the name every server knows (not only OpenAI's new name)
    caps = {body.get("max_tokens") for body in model_calls}
    assert None not in caps and max(caps) <= 384 and len(caps) > 1   # per-agent caps from prompts.toml
    assert shown["run"]["status"] == "complete" and "OPENAI_API_KEY" not in json.dumps(shown)
    listed = run_cli("runs", "list", home=tmp_path / "home").stdout
    assert listed.startswith("demo\trag\tcomplete")
    # resuming a finished run changes nothing and says so
    before = out.read_text()
    again = run_cli("graph", "resume", "demo", home=tmp_path / "home")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert out.read_text() == before and fake.request_count == counts["llm_calls"] + 4


def test_api_key_never_reaches_the_databases_or_output(tmp_path, fake):
    secret = "sk-test-SECRET-123456"
    result = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "2", "--rounds", "1",
                     *endpoint(fake), home=tmp_path, env={"OPENAI_API_KEY": secret})
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("args, message", [
    (["graph", "run", "nope"], "unknown skill 'nope'"),
    (["graph", "run", "rag", "--seeds", "/no/such/dir"], "seed path not found"),
    (["graph", "resume", "no-such-run"], "no run 'no-such-run'"),
    (["runs", "show", "no-such-run"], "no run 'no-such-run'"),
    (["graph", "show", "rag", "--format", "svg"], "unknown format"),
    (["graph", "run", "rag", "--run-id", "../escape"], "bad run id"),
    (["graph", "run", "rag", "--out", "README.md"], "already exists"),
    (["graph", "run", "rag", "--base-url", "http://[bad", "--model", "m"],
     "--base-url is not a URL (Invalid IPv6 URL)"),
])
def test_bad_arguments_give_one_clear_line(tmp_path, args, message):
    result = run_cli(*args, home=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_endpoint_is_a_clear_fatal_error(tmp_path):
    result = run_cli("graph", "run", "rag", "--limit", "1", "--base-url", "http://127.0.0.1:9/v1",
                     "--model", "m", home=tmp_path)
    assert result.returncode == 2 and "cannot reach the endpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corpus_with_no_usable_text_is_an_error(tmp_path, fake):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "blank.txt").write_text("\n\n")
    result = run_cli("graph", "run", "rag", "--seeds", str(tmp_path / "seeds"), *endpoint(fake), home=tmp_path / "h")
    assert result.returncode == 2
    assert "skipped" in result.stderr and "empty file" in result.stderr and "no usable seed text" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_stops_cleanly_and_resume_finishes(tmp_path, sig):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    home = tmp_path / "home"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.05) as fake:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "graph", "run", "rag", "--seeds", str(SAMPLE),
                                 "--limit", "6", "--run-id", "intr", *endpoint(fake)], cwd=ROOT,
                                env={**os.environ, "TEACHGRAPH_HOME": str(home)}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while fake.request_count < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(getattr(signal, sig))
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "Resume with: python cli.py graph resume intr" in stderr and "Traceback" not in stderr
        shown = json.loads(run_cli("runs", "show", "intr", "--json", home=home).stdout)
        assert shown["run"]["status"] == "interrupted" and shown["counts"]["pending"] > 0
        resumed = run_cli("graph", "resume", "intr", home=home)
        assert resumed.returncode == 0, resumed.stderr
    counts = json.loads(run_cli("runs", "show", "intr", "--json", home=home).stdout)["counts"]
    assert counts["pending"] == 0 and counts["accepted"] == 6
    ids = [json.loads(line)["id"] for line in (home / "runs" / "intr" / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == counts["samples"] == 12


def test_a_running_embedded_server_is_reused_not_restarted(tmp_path, fake):
    import os
    home = tmp_path / "home"
    home.mkdir()
    # A shared server, started outside any run (no owner), up and healthy.
    (home / "server.json").write_text(json.dumps({"pid": os.getpid(), "base_url": fake.base_url}))
    result = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "1", "--rounds", "0", home=home)
    assert result.returncode == 0, result.stderr
    assert "using the embedded model server already running" in result.stderr
    assert "starting the embedded model" not in result.stderr
    assert fake.request_count > 0
    assert all(body["response_format"]["type"] == "json_object" for body in fake.requests
               if "response_format" in body)        # the embedded server's JSON mode
    assert (home / "server.json").exists()          # not ours to stop
    assert not list(home.glob("server-*.json"))     # and no server of our own was started

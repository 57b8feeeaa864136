"""A sandboxed Python interpreter for checking answers: model-written code runs in a child process
with a wall-clock timeout, CPU, memory, process and file-size limits, an empty working folder, no
environment, and no network. Model output is untrusted input; this is the only place teachgraph
executes it.

The layers, strongest first:
- the kernel: where unprivileged user namespaces exist (most Linux machines) the child gets its own
  empty network namespace, so there is nothing to connect to; if the parent runs as root, the child
  drops to the unprivileged `nobody` user, so it cannot write the run's files, signal other processes
  or read their environments;
- an audit hook (PEP 578, cannot be removed once added) that refuses sockets, subprocesses, exec,
  ctypes, and writes outside the working folder, and the modules that would reach around it.
An audit hook alone is not a security boundary (PEP 578 says so): on a machine with neither layer of
the kernel's available, run checks only on output you would run yourself, or in a container.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
OUTPUT_LIMIT = 1 << 20          # bytes a program may write to stdout/stderr (SIGXFSZ beyond)
SHOWN_OUTPUT = 2000             # characters of output kept in a result

# Runs inside the child before the model's code. The hook sees every audited operation.
GUARD = r'''
import sys, os
_root = os.path.realpath(os.getcwd())
_blocked = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "os.system", "os.kill", "os.killpg", "ctypes.", "_ctypes.", "mmap.", "shutil.rmtree", "signal.",
            "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit")
# modules that act without raising audit events of their own (fork_exec, pidfd signals, raw sockets)
_modules = {"_posixsubprocess", "_socket", "socket", "_ctypes", "ctypes", "signal", "_signal", "mmap",
            "_multiprocessing", "multiprocessing", "pty", "fcntl", "termios", "resource", "_thread", "threading",
            "asyncio", "concurrent", "selectors", "select"}
def _inside(path):
    real = os.path.realpath(os.fspath(path))
    return real == _root or real.startswith(_root + os.sep)
def _guard(event, args):
    if event.startswith(_blocked) or event in ("pty.spawn", "webbrowser.open"):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0].split(".")[0] in _modules:
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "r", args[2] or 0
        writing = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        real = os.path.realpath(os.fspath(args[0]))
        if real.startswith("/proc"):  # other processes' environments and memory
            raise PermissionError("sandbox: reading /proc is not allowed")
        if writing and not _inside(real):
            raise PermissionError("sandbox: writing outside the working folder is not allowed")
    if event == "open" and isinstance(args[0], int):
        raise PermissionError("sandbox: opening by file descriptor is not allowed")
    if event in ("os.remove", "os.rmdir", "os.rename", "os.chmod", "os.chown", "os.symlink", "os.link",
                 "os.mkdir", "os.truncate", "os.utime", "sqlite3.connect"):
        path = args[0]
        if event == "sqlite3.connect" and path in (":memory:", b":memory:"):
            return
        if isinstance(path, int) or not _inside(path):
            raise PermissionError(f"sandbox: {event} outside the working folder is not allowed")
sys.addaudithook(_guard)
del _guard
'''


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0          # wall clock
    memory_mb: int = 256          # address space
    cpu_seconds: int = 5
    processes: int = 32           # RLIMIT_NPROC, when the child runs as `nobody`


@dataclass(frozen=True)
class Result:
    status: str                   # ok | error | timeout | memory | output_limit
    returncode: int | None
    stdout: str
    stderr: str
    isolation: str                # e.g. "netns+nobody+audit": the layers that were in place

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def explain(self) -> str:
        """One paragraph for the model or a rejection reason: what went wrong, briefly."""
        if self.status == "timeout":
            return "the program did not finish within the time limit (infinite loop or too slow)"
        if self.status == "memory":
            return "the program ran out of memory (memory limit exceeded)"
        if self.status == "output_limit":
            return "the program wrote too much output"
        lines = self.stderr.strip().splitlines()
        # the sandbox's own frames (main.py, runpy) say nothing about the program: start at its first frame
        own = next((i for i, line in enumerate(lines) if 'File "program.py"' in line), None)
        if own is not None:
            lines = ["Traceback (most recent call last):", *lines[own:]]
        return "\n".join(lines[-6:]) or f"the program exited with status {self.returncode}"


_netns_ok: bool | None = None
_unshare = None                   # libc's unshare, resolved in the parent: no dlopen after fork
NOBODY = 65534
ISOLATION_FAILED = 97             # the child's exit status when a kernel layer could not be set up


def network_namespaces_available() -> bool:
    """Can this machine give a child its own empty network namespace? (Probed once.)"""
    global _netns_ok
    if _netns_ok is None:
        try:
            probe = subprocess.run([sys.executable, "-I", "-c",
                                    "import ctypes,sys; sys.exit(ctypes.CDLL(None).unshare(%d) != 0)"
                                    % (CLONE_NEWUSER | CLONE_NEWNET)], capture_output=True, timeout=10)
            _netns_ok = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _netns_ok = False
    return _netns_ok


def run_python(code: str, limits: Limits = Limits(), *, run_name: str = "__main__") -> Result:
    """Run `code` as a Python program in the sandbox and report how it ended. `run_name` other than
    "__main__" runs it as a module (its `if __name__ == "__main__":` block does not run)."""
    global _unshare
    isolate = network_namespaces_available()
    if isolate and _unshare is None:
        _unshare = ctypes.CDLL(None, use_errno=True).unshare
    python = sys.executable
    drop = False
    if os.geteuid() == 0:  # drop to nobody, with an interpreter nobody can run
        python = _world_executable(sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
        drop = python is not None
        python = python or sys.executable

    with tempfile.TemporaryDirectory(prefix="teachgraph-sandbox-") as work:
        folder = Path(work)
        (folder / "main.py").write_text(GUARD + "\n" + _compiled_entry(run_name), encoding="utf-8")
        (folder / "program.py").write_text(code, encoding="utf-8")
        if drop:  # the child, as nobody, may write its own folder and nothing else
            os.chown(folder, NOBODY, NOBODY)
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            proc = subprocess.Popen([python, "-I", "-B", "main.py"], cwd=folder, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                    preexec_fn=child_setup(limits, isolate, drop), start_new_session=True)
            try:
                returncode = proc.wait(timeout=limits.seconds)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
                timed_out = True
        stdout = _read(folder / "stdout")
        stderr = _read(folder / "stderr", keep_tail=True)  # a traceback's last lines say what failed
    if returncode == ISOLATION_FAILED and not stdout and not stderr:
        raise SandboxError("the sandbox could not isolate the program (user namespace or privilege drop failed)")
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        status = "timeout"
    elif returncode == -signal.SIGXFSZ or "[Errno 27] File too large" in stderr:  # Python ignores SIGXFSZ
        status = "output_limit"
    elif returncode != 0 and "MemoryError" in stderr:
        status = "memory"
    else:
        status = "ok" if returncode == 0 else "error"
    layers = [*(["netns"] if isolate else []), *(["nobody"] if drop else []), "audit"]
    return Result(status=status, returncode=returncode, stdout=stdout, stderr=stderr, isolation="+".join(layers))


class SandboxError(RuntimeError):
    pass


def child_setup(limits: Limits, isolate: bool, drop: bool):
    """What the child does between fork and exec: limits, then the kernel's isolation layers."""
    def setup() -> None:  # no allocation-heavy work here: the parent may have other threads
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            if drop:  # before the user namespace: inside it there is no way to change users
                os.setgroups([])
                os.setgid(NOBODY)
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
                os.setuid(NOBODY)
            if isolate and _unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
                os._exit(ISOLATION_FAILED)
        except OSError:
            os._exit(ISOLATION_FAILED)
    return setup


def _world_executable(*candidates: str) -> str | None:
    """The first interpreter any user may run: the file and every folder above it open to others
    (a pyenv under /root is not)."""
    for candidate in candidates:
        path = Path(os.path.realpath(candidate))
        try:
            if not path.is_file() or not path.stat().st_mode & 0o001:
                continue
            if all(parent.stat().st_mode & 0o001 for parent in path.parents):
                return str(path)
        except OSError:
            continue
    return None


def _compiled_entry(run_name: str) -> str:
    # The program runs with its own file name in tracebacks, after the guard is in place.
    return ("import runpy\n"
            f"runpy.run_path('program.py', run_name={run_name!r})\n")


def _read(path: Path, keep_tail: bool = False) -> str:
    text = path.read_bytes()[:OUTPUT_LIMIT].decode("utf-8", errors="replace")
    if len(text) <= SHOWN_OUTPUT:
        return text
    return "...\n" + text[-SHOWN_OUTPUT:] if keep_tail else text[:SHOWN_OUTPUT] + "\n..."

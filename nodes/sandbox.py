"""A sandboxed Python interpreter for checking answers: model-written code runs in a child process
with a wall-clock timeout, CPU, memory and file-size limits, an empty working folder, no
environment, and no network.

No network is enforced twice: where the kernel allows unprivileged user namespaces the child gets
its own empty network namespace (nothing to connect to), and in every case an audit hook (PEP 578,
cannot be removed once added) refuses sockets, subprocesses, exec, ctypes and writes outside the
working folder. Model output is untrusted input; this is the only place teachgraph executes it.
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
            "os.system", "os.kill", "os.killpg", "ctypes.", "_ctypes.", "mmap.", "shutil.rmtree")
def _guard(event, args):
    if event.startswith(_blocked) or event in ("pty.spawn", "webbrowser.open"):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "r", args[2] or 0
        writing = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        real = os.path.realpath(os.fspath(args[0]))
        if real.startswith("/proc/") and real.endswith("/environ"):  # another process's secrets
            raise PermissionError("sandbox: reading process environments is not allowed")
        if writing and not real.startswith(_root):
            raise PermissionError("sandbox: writing outside the working folder is not allowed")
    if event in ("os.remove", "os.rmdir", "os.rename", "os.chmod", "os.chown", "os.symlink", "os.link"):
        path = args[0]
        if not isinstance(path, int) and not os.path.realpath(os.fspath(path)).startswith(_root):
            raise PermissionError(f"sandbox: {event} outside the working folder is not allowed")
sys.addaudithook(_guard)
del _guard
'''


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0          # wall clock
    memory_mb: int = 256          # address space
    cpu_seconds: int = 5


@dataclass(frozen=True)
class Result:
    status: str                   # ok | error | timeout | memory | output_limit
    returncode: int | None
    stdout: str
    stderr: str
    isolation: str                # "netns+audit" or "audit"

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


def _new_network_namespace() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0


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


def run_python(code: str, limits: Limits = Limits()) -> Result:
    """Run `code` as a Python program in the sandbox and report how it ended."""
    isolate = network_namespaces_available()

    def limit_child() -> None:  # runs in the child between fork and exec
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if isolate:
            _new_network_namespace()

    with tempfile.TemporaryDirectory(prefix="teachgraph-sandbox-") as work:
        folder = Path(work)
        (folder / "main.py").write_text(GUARD + "\n" + _compiled_entry(), encoding="utf-8")
        (folder / "program.py").write_text(code, encoding="utf-8")
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-B", "main.py"], cwd=folder, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                    preexec_fn=limit_child, start_new_session=True)
            try:
                returncode = proc.wait(timeout=limits.seconds)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
                timed_out = True
        stdout = _read(folder / "stdout")
        stderr = _read(folder / "stderr", keep_tail=True)  # a traceback's last lines say what failed
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        status = "timeout"
    elif returncode == -signal.SIGXFSZ or "[Errno 27] File too large" in stderr:  # Python ignores SIGXFSZ
        status = "output_limit"
    elif returncode != 0 and "MemoryError" in stderr:
        status = "memory"
    else:
        status = "ok" if returncode == 0 else "error"
    return Result(status=status, returncode=returncode, stdout=stdout, stderr=stderr,
                  isolation="netns+audit" if isolate else "audit")


def _compiled_entry() -> str:
    # The program runs as __main__ with its own file name in tracebacks, after the guard is in place.
    return ("import runpy\n"
            "runpy.run_path('program.py', run_name='__main__')\n")


def _read(path: Path, keep_tail: bool = False) -> str:
    text = path.read_bytes()[:OUTPUT_LIMIT].decode("utf-8", errors="replace")
    if len(text) <= SHOWN_OUTPUT:
        return text
    return "...\n" + text[-SHOWN_OUTPUT:] if keep_tail else text[:SHOWN_OUTPUT] + "\n..."

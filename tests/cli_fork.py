"""`python cli.py ...` for the tests, without paying for the imports every time.

Starting the CLI costs about 3 s of CPU, nearly all of it importing langchain, langgraph, openai and
sqlite-utils; the fast tier starts it about a hundred times. A warm process imports teachgraph.cli once
and forks a child per command: the child is a real, separate process (its own exit code, stdout and
stderr, environment, working directory and signals), exactly what `subprocess.run` of cli.py gives, but
it starts in milliseconds. Tests that signal or kill a CLI process still start it with subprocess.

Only modules that read no environment at import are warmed: huggingface_hub, for one, reads
HF_ENDPOINT when it is imported, and a test sets that per command."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_WARM = r"""
import atexit, io, json, os, sys
sys.path.insert(0, sys.argv[1])
import teachgraph.cli

def child(request):
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                           (2, request["stderr"], os.O_WRONLY)):
        opened = os.open(path, mode)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.argv = [request["argv0"], *request["args"]]
    code = 0
    try:
        teachgraph.cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class WarmCLI:
    """One warm process; `run` has subprocess.run's result and timeout behaviour."""

    def __init__(self, env: dict[str, str]):
        self._process = subprocess.Popen([sys.executable, "-c", _WARM, str(ROOT)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, bufsize=0, env=env, cwd=ROOT)
        self._pending = b""

    def run(self, args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as scratch:
            out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
            out.touch()
            err.touch()
            request = {"args": list(args), "env": env, "cwd": str(cwd), "argv0": str(ROOT / "cli.py"),
                       "stdout": str(out), "stderr": str(err)}
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
            pid = self._answer(timeout=60)["pid"]
            answer = self._answer(timeout=timeout)  # the warm process waits for the child, we for its word
            if answer is None:
                os.kill(pid, signal.SIGKILL)
                self._answer(timeout=30)
                raise subprocess.TimeoutExpired([str(ROOT / "cli.py"), *args], timeout,
                                                output=out.read_text(), stderr=err.read_text())
            finished = answer["returncode"]
            return subprocess.CompletedProcess([sys.executable, str(ROOT / "cli.py"), *args], finished,
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))

    def _answer(self, timeout: float) -> dict | None:
        """The warm process's next line, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            ready, _, _ = select.select([self._process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the warm CLI process died")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()



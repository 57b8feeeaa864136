"""The sandbox that runs model-written code: it refuses the network, stops runaway code, and says
what happened."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from teachgraph.nodes.checks import python_compute, python_tests
from teachgraph.nodes.sandbox import Limits, run_python


@pytest.fixture
def listening_port():
    """A real server on localhost, so a refused connection is the sandbox's doing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def test_good_code_runs_and_its_output_is_kept():
    result = run_python("print(sum(range(10)))")
    assert result.ok and result.stdout.strip() == "45"


@pytest.mark.parametrize("namespaces", [True, False], ids=["netns", "no-netns"])
def test_network_is_refused(listening_port, monkeypatch, namespaces):
    from teachgraph.nodes import sandbox
    if namespaces and not sandbox.network_namespaces_available():
        pytest.skip("this machine has no unprivileged network namespaces")
    monkeypatch.setattr(sandbox, "_netns_ok", namespaces)  # what machines without userns get
    port, accepted = listening_port
    for code in (f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
                 "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/', timeout=2)" % port,
                 "import _socket; _socket.socket()"):
        result = run_python(code)
        assert result.status == "error" and "socket is not allowed" in result.stderr, result
    assert accepted == []  # nothing ever reached the server


def test_the_kernel_layer_alone_cuts_the_network(listening_port):
    """Without the audit hook (which a clever program might get around), the child the sandbox sets up
    still cannot connect: its network namespace is empty."""
    import subprocess
    import sys

    from teachgraph.nodes import sandbox
    if not sandbox.network_namespaces_available():
        pytest.skip("this machine has no unprivileged network namespaces")
    sandbox.run_python("pass")  # resolves libc's unshare in the parent, as a real check does
    port, accepted = listening_port
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    child = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=30,
                           preexec_fn=sandbox.child_setup(Limits(), isolate=True, drop=False))
    assert child.returncode != 0 and "Network is unreachable" in child.stderr, child.stderr
    assert accepted == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the privilege drop applies when teachgraph runs as root")
def test_as_root_the_program_runs_as_nobody():
    result = run_python("import os; print(os.getuid(), os.getgid())")
    if "nobody" not in result.isolation:
        pytest.skip("no interpreter here that the nobody user may run")
    assert result.ok and result.stdout.split() == ["65534", "65534"]


def test_runaway_code_is_stopped_and_reported():
    result = run_python("while True:\n    pass\n", Limits(seconds=2, cpu_seconds=5))
    assert result.status == "timeout"
    assert "time limit" in result.explain()


def test_memory_hog_is_stopped_and_reported():
    result = run_python("x = bytearray(2 * 1024 ** 3)", Limits(memory_mb=256))
    assert result.status == "memory" and "memory" in result.explain()


def test_flood_of_output_is_cut():
    assert run_python("while True:\n    print('x' * 10000)").status == "output_limit"


ESCAPE = "/tmp/teachgraph-sandbox-escape"


@pytest.mark.parametrize("code, refused", [
    ("import os; os.system('echo hi')", "os.system"),
    ("import subprocess; subprocess.run(['true'])", "subprocess"),
    ("import _posixsubprocess", "importing _posixsubprocess"),   # fork_exec raises no audit event
    ("import signal", "importing signal"),                        # pidfd_send_signal raises none either
    ("import ctypes", "ctypes"),
    (f"open('{ESCAPE}', 'w').write('x')", "writing outside"),
    ("import os; open(os.getcwd() + '-x', 'w')", "writing outside"),     # a sibling with the same prefix
    (f"import sqlite3; sqlite3.connect('{ESCAPE}').execute('create table t(x int)')", "sqlite3.connect"),
    (f"import os; os.truncate('{__file__}', 0)", "os.truncate"),
    (f"import os; os.mkdir('{ESCAPE}')", "os.mkdir"),
    ("print(open('/proc/%d/environ').read())" % os.getpid(), "reading /proc"),
    ("import os; fd = os.open('/proc/1', os.O_RDONLY); os.open('environ', os.O_RDONLY, dir_fd=fd)", "reading /proc"),
])
def test_escapes_are_refused(code, refused):
    result = run_python(code)
    assert result.status == "error" and refused in result.stderr, result.stderr
    assert not os.path.exists(ESCAPE)
    assert os.path.getsize(__file__) > 0


def test_the_child_gets_no_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox-test-secret")
    result = run_python("import os; print(sorted(os.environ))")
    assert result.ok and "OPENAI_API_KEY" not in result.stdout


def test_python_tests_need_real_asserts_that_run_to_the_end():
    tests = {"tests": "assert add(2, 3) == 5"}
    wrong = "def add(a, b):\n    return a - b\n"
    for exits in ("import sys\nsys.exit(0)", "raise SystemExit(0)"):
        verdict = python_tests(tests, {"code": wrong + exits})
        assert not verdict.ok and "exited before its tests finished" in verdict.feedback
    main_block = "def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    raise SystemExit(1)\n"
    assert python_tests(tests, {"code": main_block}).ok  # a solution's main block does not run
    assert not python_tests({"tests": "add(2, 3)"}, {"code": wrong}).ok  # no assert: nothing is tested


def test_python_tests_check_reports_the_failing_assert():
    item = {"tests": "assert add(2, 3) == 5\nassert add(1, 1) == 3, 'one plus one'"}
    verdict = python_tests(item, {"code": "def add(a, b):\n    return a + b"})
    assert not verdict.ok and "one plus one" in verdict.feedback
    assert python_tests({"tests": "assert add(2, 3) == 5"},
                        {"code": "```python\ndef add(a, b):\n    return a + b\n```"}).ok


def test_python_compute_evaluates_only_arithmetic():
    assert python_compute({}, {"calculation": "8e6 * 0.25 / 100"}).extras == {"result": "20,000"}
    refused = python_compute({}, {"calculation": "__import__('os').system('id')"})
    assert not refused.ok and "plain arithmetic" in refused.feedback
    assert not python_compute({}, {"calculation": "1 / 0"}).ok

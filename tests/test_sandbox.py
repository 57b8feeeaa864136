"""The sandbox that runs model-written code: it refuses the network, stops runaway code, and says
what happened."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from nodes.checks import python_compute, python_tests
from nodes.sandbox import Limits, run_python


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


@pytest.mark.parametrize("namespaces", [True, False], ids=["netns+audit", "audit-only"])
def test_network_is_refused(listening_port, monkeypatch, namespaces):
    import nodes.sandbox
    if namespaces and not nodes.sandbox.network_namespaces_available():
        pytest.skip("this machine has no unprivileged network namespaces")
    monkeypatch.setattr(nodes.sandbox, "_netns_ok", namespaces)  # audit-only: what machines without userns get
    port, accepted = listening_port
    for code in (f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
                 "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/', timeout=2)" % port,
                 "import _socket; _socket.socket()"):
        result = run_python(code)
        assert result.status == "error" and "sandbox: socket" in result.stderr, result
    assert accepted == []  # nothing ever reached the server


def test_runaway_code_is_stopped_and_reported():
    result = run_python("while True:\n    pass\n", Limits(seconds=2, cpu_seconds=5))
    assert result.status == "timeout"
    assert "time limit" in result.explain()


def test_memory_hog_is_stopped_and_reported():
    result = run_python("x = bytearray(2 * 1024 ** 3)", Limits(memory_mb=256))
    assert result.status == "memory" and "memory" in result.explain()


def test_flood_of_output_is_cut():
    assert run_python("while True:\n    print('x' * 10000)").status == "output_limit"


@pytest.mark.parametrize("code, refused", [
    ("import os; os.system('echo hi')", "os.system"),
    ("import subprocess; subprocess.run(['true'])", "subprocess.Popen"),
    ("open('/tmp/teachgraph-sandbox-escape', 'w').write('x')", "writing outside"),
    ("import ctypes", "ctypes"),
    ("print(open('/proc/%d/environ').read())" % os.getpid(), "process environments"),
])
def test_escapes_are_refused(code, refused):
    result = run_python(code)
    assert result.status == "error" and refused in result.stderr, result.stderr
    assert not os.path.exists("/tmp/teachgraph-sandbox-escape")


def test_the_child_gets_no_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sandbox-test-secret")
    result = run_python("import os; print(sorted(os.environ))")
    assert result.ok and "OPENAI_API_KEY" not in result.stdout


def test_python_tests_check_reports_the_failing_assert():
    item = {"tests": "assert add(2, 3) == 5\nassert add(1, 1) == 3, 'one plus one'"}
    verdict = python_tests(item, {"code": "def add(a, b):\n    return a + b"})
    assert not verdict.ok and "one plus one" in verdict.feedback
    assert python_tests({"tests": "assert add(2, 3) == 5"}, {"code": "```python\ndef add(a, b):\n    return a + b\n```"}).ok


def test_python_compute_evaluates_only_arithmetic():
    assert python_compute({}, {"calculation": "8e6 * 0.25 / 100"}).extras == {"result": "20,000"}
    refused = python_compute({}, {"calculation": "__import__('os').system('id')"})
    assert not refused.ok and "plain arithmetic" in refused.feedback
    assert not python_compute({}, {"calculation": "1 / 0"}).ok

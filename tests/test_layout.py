"""One import name: loading every skill and building its graph, the CLI and the API import only
teachgraph.* modules. In a checkout the folders graphs/, nodes/, skills/ and checkpoints/ sit at the top,
so a stray old-style name (`graphs.flow`) would import a second copy of a module instead of failing."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CODE = """
import sys
import teachgraph, teachgraph.cli, teachgraph.api
from teachgraph import skills
for name in skills.available():
    skills.load(name).build_graph().compile()
stray = sorted(m for m in sys.modules if m.split(".")[0] in ("graphs", "nodes", "skills", "checkpoints", "cli"))
print(",".join(stray))
"""


def test_only_teachgraph_modules_are_imported():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported outside teachgraph: {done.stdout.strip()}"

"""teachgraph: AgentInstruct-style synthetic data from raw documents and code, as LangGraph graphs."""

__version__ = "0.1.0"

# Installed, teachgraph is one package: the subpackages graphs, nodes, skills and checkpoints sit under
# it (pyproject.toml maps them). In a source checkout they stay where the project's layout has them,
# beside this folder, so the checkout's root is searched for them too (and before any other install).
from pathlib import Path as _Path

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "graphs" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's __path__)
del _Path, _checkout

# The library API (teachgraph/api.py), loaded on first use so that `import teachgraph.seeds` and the
# other layers stay light. `teachgraph.skills()` lists the skills: the subpackage is callable.
_API = {
    "run": "teachgraph.api", "arun": "teachgraph.api", "resume": "teachgraph.api", "aresume": "teachgraph.api",
    "open_run": "teachgraph.api", "probe_endpoint": "teachgraph.api", "Run": "teachgraph.api",
    "Reporter": "teachgraph.api", "estimate": "teachgraph.api", "BudgetReached": "teachgraph.client.budget",
    "filter_samples": "teachgraph.api", "report": "teachgraph.api",
    "Options": "teachgraph.options", "DEFAULTS": "teachgraph.options",
    "RunStatus": "teachgraph.states", "SeedStatus": "teachgraph.states",
    "Executor": "teachgraph.runner", "LocalExecutor": "teachgraph.runner", "SeedRunner": "teachgraph.runner",
    "TeachgraphError": "teachgraph.errors", "UsageError": "teachgraph.errors", "FatalRunError": "teachgraph.errors",
    "RunStopped": "teachgraph.errors", "RunInterrupted": "teachgraph.errors",
    "StorageError": "teachgraph.checkpoints.storage", "EndpointError": "teachgraph.client.endpoint",
    "SkillError": "teachgraph.skills", "EmbeddedError": "teachgraph.embedded", "ExportError": "teachgraph.export",
}
__all__ = ["__version__", "skills", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(_API[name]), name)
    if name == "skills":
        import importlib
        return importlib.import_module("teachgraph.skills")
    raise AttributeError(f"module 'teachgraph' has no attribute {name!r}")

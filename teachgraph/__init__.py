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

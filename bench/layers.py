"""Non-blank lines of source per layer, the layers as pyproject's import-linter contract lists them (top
first): `python bench/layers.py`. Modules a layer line names with ':' are siblings in one layer."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the distribution's module names -> the checkout's folders (pyproject's package-dir)
FOLDERS = {"teachgraph.graphs": "graphs", "teachgraph.nodes": "nodes", "teachgraph.skills": "skills",
           "teachgraph.checkpoints": "checkpoints"}


def source_of(module: str) -> list[Path]:
    folder = FOLDERS.get(module)
    path = ROOT / folder if folder else ROOT / module.replace(".", "/")
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else []


def lines(files: list[Path]) -> int:
    return sum(1 for f in files for line in f.read_text().splitlines() if line.strip())


def main() -> None:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    counted: set[Path] = set()
    print(f"{'lines':>6}  layer")
    for layer in contract["layers"]:
        modules = [m.strip() for m in layer.split(":")]
        files = [f for m in modules for f in source_of(m) if f not in counted]
        # a package's own layer excludes subpackages listed as layers of their own (teachgraph: its modules)
        if modules == ["teachgraph"]:
            files = [f for f in (ROOT / "teachgraph").glob("*.py") if f not in counted]
        counted.update(files)
        print(f"{lines(files):6d}  {layer}")
    rest = [f for f in (ROOT / "teachgraph").rglob("*.py") if f not in counted]
    print(f"{lines(rest):6d}  (not in a layer: {', '.join(sorted({f.parent.name for f in rest})) or '-'})")
    print(f"{lines(sorted((ROOT / 'tests').rglob('*.py'))):6d}  tests/")


if __name__ == "__main__":
    main()

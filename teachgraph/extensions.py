"""Extension points register by name, one way for all: answer checks (nodes/checks.py), quality gates
(teachgraph/gates), export formats (teachgraph/export.py) and structured-output response modes
(teachgraph/client/llm.py). This module sits in the lowest layer so that every layer can hold one.

    CHECKS: Registry[CheckDef] = Registry("check", CheckDef, builtins=("teachgraph.nodes.checks",))

    @CHECKS.register("choice_key")
    def choice_key(item, response): ...

A registry's entries come from modules whose import runs the decorators: its `builtins` and, as for
Simon Willison's `llm` plugins, any module a distribution names in the entry-point group
`teachgraph.<kind>s` (e.g. `[project.entry-points."teachgraph.gates"] mine = "my_pkg.gates"`).
Built-ins and plugins register through the same decorator; both are imported the first time a
registry is asked for a name, so no import order matters. `get` turns an unknown name into a one-line
error listing the known ones.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(LookupError):
    """A name nothing registered (LookupError, not KeyError: KeyError would quote the message)."""


class Registry(Generic[T]):
    def __init__(self, kind: str, wrap: Callable[..., T] | None = None, *, builtins: tuple[str, ...] = (),
                 group: str | None = None):
        """`kind` names the entries in errors ("check"); `wrap(name, fn, **options)` makes the entry
        that a decorated function registers (default: the function itself). `builtins` are the modules
        that register the built-in entries; `group` the entry-point group plugins use (default
        `teachgraph.<kind>s`)."""
        self.kind = kind
        self._wrap = wrap
        self._entries: dict[str, T] = {}
        self._modules = builtins
        self.group = group or f"teachgraph.{kind.replace(' ', '_')}s"
        self._loaded = False

    def register(self, name: str, **options) -> Callable[[Callable], Callable]:
        """A decorator: the function (or class) is registered under `name` and returned unchanged."""
        def decorate(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = self._wrap(name, fn, **options) if self._wrap else fn
            return fn
        return decorate

    def load(self) -> None:
        """Import the built-in modules, then every plugin of the entry-point group (once)."""
        if self._loaded:
            return
        self._loaded = True   # first: a module being imported may itself ask the registry
        for module in self._modules:
            importlib.import_module(module)
        for plugin in entry_points(group=self.group):
            plugin.load()

    def get(self, name: str) -> T:
        if name not in self._entries:
            self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})") from None

    __getitem__ = get

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def in_order(self) -> list[str]:
        """The names as registered (built-ins first, in their modules' order)."""
        self.load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

"""Extension points register by name, one way for all: answer checks (nodes/checks.py) today, quality
gates and exporters next.

    CHECKS: Registry[CheckDef] = Registry("check")

    @CHECKS.register("choice_key")
    def choice_key(item, response): ...

A skill names what it uses (skill.toml `checks = [...]`); `get` turns an unknown name into a one-line
error listing the known ones, which the caller raises when the skill is built, before any model call.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(LookupError):
    """A name nothing registered (LookupError, not KeyError: KeyError would quote the message)."""


class Registry(Generic[T]):
    def __init__(self, kind: str, wrap: Callable[..., T] | None = None):
        """`kind` names the entries in errors ("check"); `wrap(name, fn, **options)` makes the entry
        that a decorated function registers (default: the function itself)."""
        self.kind = kind
        self._wrap = wrap
        self._entries: dict[str, T] = {}

    def register(self, name: str, **options) -> Callable[[Callable], Callable]:
        """A decorator: the function is registered under `name` and returned unchanged."""
        def decorate(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = self._wrap(name, fn, **options) if self._wrap else fn
            return fn
        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

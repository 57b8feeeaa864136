"""The gate interface: a sample in, a verdict out.

A gate is a class registered by name with `@register`, with its settings as a pydantic model. The
pipeline asks every gate to `check` a sample (the first drop wins) and, only once every gate kept it,
tells each gate to `admit` it: a stateful gate (a dedup index) must learn only what the run keeps, so a
row dropped by a later gate never becomes the representative its duplicates point to."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from teachgraph.extensions import Registry
from teachgraph.gates.store import GateStore
from teachgraph.gates.text import words


class SampleError(ValueError):
    """A row that is not a chat sample (one line, for the rejection's reason)."""


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Optional[str] = None
    tool_calls: Optional[list[Any]] = None


class ChatSample(BaseModel):
    """What the gates read of a row: `id` + `messages` (teachgraph and orca-agentinstruct-1M), and
    teachgraph's `metadata`. To be replaced by the project's Sample model (issue 13)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    id: str
    messages: list[Message]
    metadata: dict[str, Any] = {}

    @field_validator("messages", mode="before")
    @classmethod
    def _messages_as_json_string(cls, value: Any) -> Any:
        # orca-agentinstruct-1M-v1 stores each row's messages as one JSON-encoded string.
        return json.loads(value) if isinstance(value, str) else value

    @classmethod
    def from_row(cls, row: Any, fallback_id: str) -> "ChatSample":
        if not isinstance(row, dict):
            raise SampleError(f"a row must be a JSON object, not {type(row).__name__}")
        if "id" not in row:
            row = {**row, "id": fallback_id}
        try:
            return cls.model_validate({**row, "id": str(row["id"])})
        except (ValidationError, ValueError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": ("messages",), "msg": str(exc)}
            where = ".".join(str(p) for p in first["loc"])
            raise SampleError(f"not a chat sample: {where}: {first['msg']}") from None

    def _turns(self, role: str) -> list[str]:
        texts = []
        for m in self.messages:
            if m.role == role:
                parts = [m.content or ""]
                if m.tool_calls:
                    parts.append(json.dumps(m.tool_calls, ensure_ascii=False, sort_keys=True))
                texts.append("\n".join(p for p in parts if p))
        return texts

    @cached_property
    def user_turns(self) -> list[str]:
        return self._turns("user")

    @cached_property
    def assistant_turns(self) -> list[str]:
        return self._turns("assistant")

    @cached_property
    def instruction(self) -> str:
        """Every user turn: the task (and, for passage skills, the passage it is about)."""
        return "\n\n".join(self.user_turns)

    @cached_property
    def response(self) -> str:
        """Every assistant turn, tool calls included."""
        return "\n\n".join(self.assistant_turns)

    @cached_property
    def instruction_words(self) -> list[str]:
        return words(self.instruction)

    @cached_property
    def response_words(self) -> list[str]:
        return words(self.response)


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)
    keep: bool
    gate: Optional[str] = None
    reason: Optional[str] = None
    duplicate_of: Optional[str] = None

    @classmethod
    def drop(cls, gate: str, reason: str, duplicate_of: Optional[str] = None) -> "Verdict":
        return cls(keep=False, gate=gate, reason=reason, duplicate_of=duplicate_of)

    @classmethod
    def flag(cls, gate: str, reason: str) -> "Verdict":
        """Kept, with a note: the gate's skill setting says to flag, not drop (grounding)."""
        return cls(keep=True, gate=gate, reason=reason)

    @property
    def flagged(self) -> bool:
        return self.keep and self.gate is not None

    def rejection(self) -> dict:
        return {"gate": self.gate, "reason": self.reason, "duplicate_of": self.duplicate_of}


KEEP = Verdict(keep=True)


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Gate:
    """Subclass, set `Settings`, implement `check`; stateful gates also implement `admit`."""

    name: ClassVar[str]
    Settings: ClassVar[type[BaseModel]] = NoSettings
    needs_store: ClassVar[bool] = False

    def __init__(self, settings: BaseModel, store: Optional[GateStore] = None):
        if self.needs_store and store is None:
            raise ValueError(f"gate {self.name} keeps state and needs a store")
        self.settings = settings
        self.store = store

    def check(self, sample: ChatSample) -> Verdict:
        raise NotImplementedError

    def admit(self, sample: ChatSample) -> None:
        """The sample passed every gate: remember it (dedup indexes). Stateless gates ignore it."""

    def drop(self, reason: str, duplicate_of: Optional[str] = None) -> Verdict:
        return Verdict.drop(self.name, reason, duplicate_of)

    def flag(self, reason: str) -> Verdict:
        return Verdict.flag(self.name, reason)

    def close(self) -> None:
        """The pipeline is done: release what the gate holds (the judge's model client)."""


def _named(name: str, cls: type[Gate]) -> type[Gate]:
    cls.name = name
    return cls


# The built-in gates register from their own modules, as a plugin's would (teachgraph/extensions.py);
# semantic is not among them: it needs the `semantic` extra and registers when imported.
GATES: Registry[type[Gate]] = Registry("gate", _named, builtins=(
    "teachgraph.gates.degenerate", "teachgraph.gates.decontaminate", "teachgraph.gates.dedup",
    "teachgraph.gates.grounding", "teachgraph.gates.judge"))
register = GATES.register   # class decorator: `@register("near_duplicate")`, settings in the class's Settings


def make_gate(name: str, store: Optional[GateStore] = None, **settings: Any) -> Gate:
    cls = GATES.get(name)
    return cls(cls.Settings(**settings), store)

"""What skill.toml may say, validated when the skill loads. Every key the code reads is declared here
with its default, so a misspelt or unknown key is refused (one line naming the file and the key)
instead of being ignored, and no node reads a default of its own.

The [item], [content] and [response] tables list a reply's fields (a string is a field's
description, a table its full spec: see nodes/schemas.py); [response] also holds the answer step's
settings (mode, turns, corrections, follow_ups), which are not fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

DEFAULT_MAX_LENGTH = 2000


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Spec):
    """One field of a reply schema (nodes/schemas.py turns these into pydantic fields)."""

    description: str = Field(min_length=1)
    optional: bool = False                  # may be empty ("")
    min_length: int = 1
    max_length: int = DEFAULT_MAX_LENGTH
    enum: tuple[str, ...] | None = Field(default=None, min_length=1)
    # api_list: a named type (nodes/schemas.py NAMED_TYPES); api_names ([item] only): a list of this
    # seed's API names (graphs/flow.py)
    type: Literal["api_list", "api_names"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _description_only(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"description": value}
        if isinstance(value, dict) and "enum" in value:
            return {**value, "enum": tuple(str(v) for v in value["enum"])}
        return value


Fields = dict[str, FieldSpec]


class Goal(_Spec):
    """A refinement goal the suggester may choose (graphs/flow.py)."""

    name: str = Field(min_length=1)
    description: str = ""
    edits_content: bool = False             # the editor may rewrite the material too


class Refinement(_Spec):
    rounds: int = Field(default=2, ge=0)    # suggester -> editor rounds; the CLI's --rounds overrides
    goals: tuple[Goal, ...] = ()


class Transform(_Spec):
    extend: bool = False                    # add an `extend` step after transform (tool use)
    max_apis: int = Field(default=6, gt=0)  # extend keeps at most this many APIs
    fit: str | None = None                  # the agent first judges whether the seed fits this
    # A transformed passage must keep its seed's facts (graphs/flow.py): below `min_seed_support` (the
    # share of its content words found in the seed) it is replaced by the seed's own text ("fallback",
    # recorded in the sample's transformation) or the seed is rejected ("reject"); "off": not measured.
    keep_facts: Literal["off", "fallback", "reject"] = "off"
    # 0.2: planted faithful rewrites keep >= 0.33 of their words from the seed, rewrites of another
    # document <= 0.09 (tests/test_grounding.py prints the table)
    min_seed_support: float = Field(default=0.2, ge=0, le=1)


class Context(_Spec):
    """rag: how a seed becomes a context of passages."""

    own_passages_max: int = Field(default=3, gt=0)
    distractors: int = Field(default=3, ge=0)
    passage_chars: int = Field(default=420, gt=0)   # target passage length when cutting a chunk


class Judge(_Spec):
    """The LLM judge (`--judge-model`): it scores each answer 1-10 against the skill's rubric
    (skills/<skill>/rubric.toml, else skills/rubric.toml); below `threshold` the answer fails."""

    threshold: int = Field(default=6, ge=1, le=10)


class Rubric(_Spec):
    """rubric.toml: what the judge is told to look for, kept as data beside the skill."""

    criteria: tuple[str, ...] = Field(min_length=1)
    scale: str = Field(default="1 = unusable or wrong, 5 = acceptable with flaws, 10 = exemplary", min_length=1)


_RESPONSE_SETTINGS = ("mode", "turns", "corrections", "follow_ups")


class Response(_Spec):
    mode: Literal["single", "follow_up", "tool_calls"] = "single"
    turns: int = Field(default=1, gt=0)                 # follow_up: user turns per conversation
    corrections: int = Field(default=1, ge=0)           # a failed check goes back to the answer agent this often
    follow_ups: tuple[str, ...] = Field(default=("a natural follow-up question",), min_length=1)
    fields: Fields = {}

    @model_validator(mode="before")
    @classmethod
    def _split_fields(cls, value: Any) -> Any:
        """skill.toml puts fields beside the settings: a table or a string is a field, the rest settings."""
        if not isinstance(value, dict) or "fields" in value:
            return value
        fields = {k: v for k, v in value.items() if k not in _RESPONSE_SETTINGS and isinstance(v, (str, dict))}
        return {**{k: v for k, v in value.items() if k not in fields}, "fields": fields}


class SkillSpec(_Spec):
    """The whole of skill.toml."""

    name: str
    title: str
    description: str = ""
    split: str
    graph: str = Field(pattern=r"^[\w.]+:\w+$")       # module:function building the StateGraph
    aliases: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()                        # nodes/checks.py names, run on every answer
    item: Fields = {}
    content: Fields = {}
    response: Response = Response()
    refinement: Refinement = Refinement()
    transform: Transform = Transform()
    context: Context = Context()
    judge: Judge = Judge()
    # The sample gates (teachgraph/gates/run.py): gate name -> true, false, or a table of its settings.
    # Names and settings are checked when the skill loads (skills.check_gates), by the gate registry.
    gates: dict[str, StrictBool | dict[str, Any]] = {}


def first_problem(error: Exception) -> str:
    """One line from a pydantic ValidationError: where in skill.toml, and what is wrong."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error)
    first = errors()[0]
    # [response]'s fields sit beside its settings in skill.toml: show them where the file has them
    where = ".".join(str(part) for part in first["loc"] if part != "fields") or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if first["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {first['msg']}"

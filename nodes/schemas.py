"""Agent reply schemas built from data. A skill declares the fields of its items and responses in
skill.toml; this turns them into pydantic models, so a new skill needs no Python for its shapes.

    [item]
    question = "the question, self-contained"            # a string field: just its description
    answer_key = { enum = ["A", "B", "C", "D"], description = "letter of the right choice" }
    starter_code = { description = "code to work on, or empty", optional = true, max_length = 1500 }

Fields are flat (strings and enums): grammar-constrained decoding on small local models handles
flat schemas best. Structured values (an API list) use a named type from NAMED_TYPES.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator

DEFAULT_MAX_LENGTH = 2000


class Parameter(BaseModel):
    name: str = Field(min_length=1, max_length=40, description="parameter name")
    type: Literal["string", "integer", "number", "boolean", "array", "object"] = Field(description="JSON type")
    description: str = Field(max_length=200, description="what the parameter means")
    required: bool = Field(description="whether a call must give it")


class Api(BaseModel):
    name: str = Field(min_length=1, max_length=60, description="function name, snake_case")
    description: str = Field(min_length=5, max_length=300, description="what the API does")
    parameters: list[Parameter] = Field(description="its parameters")
    returns: str = Field(max_length=200, description="what it returns")

    @field_validator("name")
    @classmethod
    def identifier(cls, name: str) -> str:
        # checked here, not as a schema pattern: regex grammars are where local servers differ most
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
            raise ValueError(f"API name {name!r} is not an identifier like get_weather")
        return name


class ApiList(BaseModel):
    apis: list[Api] = Field(min_length=1, max_length=6, description="the APIs")


NAMED_TYPES: dict[str, Any] = {"api_list": Annotated[list[Api], Field(min_length=1)]}


class SchemaError(ValueError):
    pass


def field_definition(name: str, spec: Any) -> tuple[Any, Any]:
    if isinstance(spec, str):
        spec = {"description": spec}
    if not isinstance(spec, dict) or not spec.get("description"):
        raise SchemaError(f"field {name!r} needs a description")
    optional = bool(spec.get("optional"))
    if "enum" in spec:
        values = tuple(str(v) for v in spec["enum"])
        if not values:
            raise SchemaError(f"field {name!r}: empty enum")
        annotation: Any = Literal[values]
        return annotation, Field(description=spec["description"])
    if "type" in spec:
        try:
            annotation = NAMED_TYPES[spec["type"]]
        except KeyError:
            raise SchemaError(f"field {name!r}: unknown type {spec['type']!r} (known: {sorted(NAMED_TYPES)})") \
                from None
        return annotation, Field(description=spec["description"])
    bounds = {"max_length": int(spec.get("max_length", DEFAULT_MAX_LENGTH))}
    if optional:
        return str, Field(default="", description=spec["description"], **bounds)
    bounds["min_length"] = int(spec.get("min_length", 1))
    return str, Field(description=spec["description"], **bounds)


def build(model_name: str, fields: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model with `fields` (a skill.toml table). Built once per table."""
    if not fields:
        raise SchemaError(f"{model_name}: no fields")
    return _build(model_name, _freeze(fields))


@lru_cache(maxsize=None)
def _build(model_name: str, frozen: tuple) -> type[BaseModel]:
    fields = _thaw(frozen)
    return create_model(model_name, **{name: field_definition(name, spec) for name, spec in fields.items()})


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return ("__dict__", tuple((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("__list__", tuple(_freeze(v) for v in value))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple) and value and value[0] == "__dict__":
        return {k: _thaw(v) for k, v in value[1]}
    if isinstance(value, tuple) and value and value[0] == "__list__":
        return [_thaw(v) for v in value[1]]
    return value

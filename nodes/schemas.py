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

from teachgraph.skills.spec import Fields, FieldSpec


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


def field_definition(name: str, spec: FieldSpec) -> tuple[Any, Any]:
    if spec.enum is not None:
        return Literal[spec.enum], Field(description=spec.description)
    if spec.type is not None:
        try:
            annotation = NAMED_TYPES[spec.type]
        except KeyError:
            raise SchemaError(f"field {name!r}: type {spec.type!r} is not a reply type "
                              f"(known: {sorted(NAMED_TYPES)})") from None
        return annotation, Field(description=spec.description)
    if spec.optional:
        return str, Field(default="", description=spec.description, max_length=spec.max_length)
    return str, Field(description=spec.description, max_length=spec.max_length, min_length=spec.min_length)


def build(model_name: str, fields: Fields) -> type[BaseModel]:
    """A pydantic model with `fields` (a skill.toml table, validated by skills/spec.py). Built once per table."""
    if not fields:
        raise SchemaError(f"{model_name}: no fields")
    return _build(model_name, tuple(fields.items()))


@lru_cache(maxsize=None)
def _build(model_name: str, fields: tuple[tuple[str, FieldSpec], ...]) -> type[BaseModel]:
    return create_model(model_name, **{name: field_definition(name, spec) for name, spec in fields})

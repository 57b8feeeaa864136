"""A stand-in model for the flow skills: it reads the JSON schema each request carries and replies
with a valid instance, filling the fields that checks look at (code, tests, calculation, answer
letters, labels, actions, tool calls) with content that passes, or fails when a test says so."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from teachgraph.testing.fake_openai import instance_from_schema
from tests.rag_script import distinct_words

APIS = [
    {"name": "get_weather", "description": "Current weather for a city.",
     "parameters": [{"name": "city", "type": "string", "description": "city name", "required": True}],
     "returns": "temperature and conditions"},
    {"name": "get_forecast", "description": "Forecast for a city.",
     "parameters": [{"name": "city", "type": "string", "description": "city name", "required": True},
                    {"name": "days", "type": "integer", "description": "days ahead", "required": False}],
     "returns": "daily forecasts"},
]
PAGE = '[1] link "Home"\n[2] textbox "Search"\n[3] button "Go"\n[4] link "Pricing"'


@dataclass
class FlowScript:
    goals_per_item: int = 1                  # suggester picks a goal this many times, then "none"
    wrong: set[str] = field(default_factory=set)   # fields to fill with failing content
    calls: list[str] = field(default_factory=list)  # the schema name of each request, in order

    def reply(self, system: str, user: str, schema: dict) -> str:
        props = schema.get("properties", {})
        self.calls.append(",".join(sorted(props)))
        value = instance_from_schema(schema)
        for name, spec in props.items():
            if isinstance(value.get(name), str) and "enum" not in spec:
                # the same prompt gets the same reply, as a resumed run would; different prompts differ
                tag = hashlib.sha256(f"{system}\n{user}".encode()).hexdigest()[:6]
                # words that depend on the prompt, as a model's do: one filler for every prompt made
                # near-duplicate samples, which the run's gates (rightly) drop
                value[name] = f"{value[name]} ({tag}) " + distinct_words(f"{system}\n{user}\n{name}", 12)
        fill = {
            "content": PAGE if "accessibility tree" in system else "A short passage about weather in Paris. " * 3,
            "apis": APIS,
            "needed_apis": ["get_weather"],
            "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0",
            "starter_code": "",
            "code": "def add(a, b):\n    return a - b" if "code" in self.wrong else "def add(a, b):\n    return a + b",
            "calculation": "1 / 0" if "calculation" in self.wrong else "8e6 * 0.25 / 100",
            "unit": "piano tuners",
            "labels": "positive, negative, neutral",
            "label": "sarcastic" if "label" in self.wrong else "neutral",
            "actions": "click [9]" if "actions" in self.wrong else "type [2] \"pricing\"\nclick [3]",
        }
        for name, content in fill.items():
            if name in props:
                value[name] = content
        if "fits" in props:
            value["fits"] = "fits" not in self.wrong
            value["why_not"] = "it is a poem, not software or a service" if "fits" in self.wrong else ""
        if "answer_key" in props and "enum" in props["answer_key"]:
            value["answer_key"] = "B"
        if "answer" in props and "enum" in props["answer"]:
            value["answer"] = "C" if "answer" in self.wrong else "B"
        if "goal" in props:
            rounds = len(re.findall(r"round \d+:", system))
            goals = [g for g in props["goal"]["enum"] if g != "none"]
            value["goal"] = goals[0] if rounds < self.goals_per_item else "none"
        if "action" in props and "get_weather" not in json.dumps(schema):  # the tool it needs is not offered
            value.update(action="cannot_do", calls=[], message="None of the tools given can get the weather.")
        elif "action" in props:
            value["action"] = "call_tools"
            value["calls"] = [{"name": "get_weather", "arguments": json.dumps(
                {} if "arguments" in self.wrong else {"city": "Paris"})}]
            value["message"] = ""
        if "results" in props:
            value["results"] = ['{"temp_c": 18, "conditions": "cloudy"}'] * len(value["results"])
        return json.dumps(value)


    def http_responder(self, body: dict) -> str:
        """For tests/fake_openai.py: the same replies over HTTP."""
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        fmt = body.get("response_format") or {}
        schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema") or {}
        return self.reply(system, str(messages[-1]["content"]), schema)


class SchemaChatModel(BaseChatModel):
    """In-process chat model: replies with script.reply(system, user, schema of the request)."""

    script: Any

    @property
    def _llm_type(self) -> str:
        return "schema-fake"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
        fmt = kwargs.get("response_format") or kwargs.get("extra_body", {}).get("response_format") or {}
        schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema") or {}
        content = self.script.reply(system, str(messages[-1].content), schema)
        message = AIMessage(content=content, response_metadata={"finish_reason": "stop"},
                            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        return ChatResult(generations=[ChatGeneration(message=message)])

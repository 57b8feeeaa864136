"""The errors teachgraph raises on purpose, under one root, so a caller catches `TeachgraphError`
and the CLI maps each kind to its exit code in one place (`exit_code`). The lowest layer: it imports
nothing, and the modules that raise these errors define their own subclasses of them (the store's
StorageError, the client's EndpointError, SkillError, EmbeddedError, ExportError ...)."""

from __future__ import annotations


class TeachgraphError(Exception):
    """The root. Its text is one line meant for a person (a path, a cause and what to do)."""

    exit_code = 2


class UsageError(TeachgraphError, ValueError):
    """Bad arguments or inputs, found before any work: a skill, a seed path, --out, a run id."""


class FatalRunError(TeachgraphError, RuntimeError):
    """An error no retry fixes stopped the run (a rejected key, an endpoint down, a server that
    keeps crashing, a run held by another process); the run's seeds stay resumable."""


class RunStopped(FatalRunError):
    """A run that was made stopped on a fatal error; `run_id` names it for `resume`. Its text is
    the cause's."""

    def __init__(self, message: str, run_id: str):
        super().__init__(message)
        self.run_id = run_id


class RunInterrupted(TeachgraphError):
    """Ctrl-C or SIGTERM stopped the run; it can be resumed."""

    exit_code = 130

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id} was interrupted")
        self.run_id = run_id

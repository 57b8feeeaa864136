"""The embedded server's speed options (teachgraph/embedded.py tuning()): no model needed."""

from __future__ import annotations

import itertools

from teachgraph import embedded


def _machine(monkeypatch, cores: int, idle_share: float) -> None:
    """/proc/stat as it would read on a machine whose cores are idle `idle_share` of the time."""
    ticks = itertools.count()

    def cpu_times() -> list[int]:
        n = next(ticks) * 1000
        return [int(n * (1 - idle_share)), 0, 0, int(n * idle_share), 0, 0, 0]
    monkeypatch.setattr(embedded, "_cpu_times", cpu_times)
    monkeypatch.setattr(embedded.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(embedded.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(embedded.time, "sleep", lambda seconds: None)


def test_threads_go_to_idle_cores_only(monkeypatch):
    _machine(monkeypatch, cores=2, idle_share=1.0)
    assert embedded.idle_cores() == 2
    _machine(monkeypatch, cores=8, idle_share=0.5)
    assert embedded.idle_cores() == 4
    _machine(monkeypatch, cores=2, idle_share=0.0)       # every core busy: one thread, never none
    assert embedded.idle_cores() == 1


def test_tuning_sets_threads_cache_and_last_token_logits_and_the_switch_turns_it_off(monkeypatch):
    _machine(monkeypatch, cores=2, idle_share=0.0)
    options = embedded.tuning()
    pairs = dict(zip(options[::2], options[1::2]))
    assert pairs["--logits_all"] == "false" and pairs["--cache"] == "true" and pairs["--cache_type"] == "ram"
    assert pairs["--n_threads"] == pairs["--n_threads_batch"] == "1"
    assert embedded.tuning(threads=3)[-3:] == ["3", "--n_threads_batch", "3"]
    monkeypatch.setenv(embedded.TUNING_SWITCH, "off")
    assert embedded.tuning() == []

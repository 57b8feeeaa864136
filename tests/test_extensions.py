"""One registration pattern for every extension point (teachgraph/extensions.py): checks, gates, export
formats and response modes are Registries; built-ins and plugins (entry points) register the same way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teachgraph.client.llm import MODES, structured_request
from teachgraph.export import FORMATS
from teachgraph.extensions import Registry, UnknownName
from teachgraph.gates import GATES, make_gate
from teachgraph.nodes.checks import CHECKS

ROOT = Path(__file__).resolve().parent.parent


def test_every_extension_point_is_a_registry_with_its_built_ins():
    for registry in (CHECKS, GATES, FORMATS, MODES):
        assert isinstance(registry, Registry)
    assert {"degenerate", "decontaminate", "exact_duplicate", "near_duplicate"} <= set(GATES.names())
    assert FORMATS.in_order()[:4] == ["hf", "orca", "sharegpt", "jsonl"]
    assert MODES.in_order()[:4] == ["json_schema", "json_object", "tools", "prompt"]
    assert {"python_tests", "choice_key"} <= set(CHECKS.names())
    with pytest.raises(UnknownName, match=r"^unknown gate 'nope' \(known: .*degenerate"):
        make_gate("nope")
    with pytest.raises(UnknownName, match=r"^unknown response mode 'xml'"):
        structured_request("xml", object)


def test_builtins_load_lazily_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "tg_builtin_widgets.py").write_text(textwrap.dedent("""
        from tests_widgets_registry import WIDGETS
        @WIDGETS.register("spoke")
        def spoke(): return "spoke"
    """))
    (tmp_path / "tests_widgets_registry.py").write_text(textwrap.dedent("""
        from teachgraph.extensions import Registry
        WIDGETS = Registry("widget", builtins=("tg_builtin_widgets",))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import tests_widgets_registry
    widgets = tests_widgets_registry.WIDGETS
    assert "tg_builtin_widgets" not in sys.modules          # nothing imported until a name is asked for
    assert widgets.get("spoke")() == "spoke"
    assert widgets.names() == ["spoke"] and widgets.group == "teachgraph.widgets"


PLUGIN = '''
from pydantic import BaseModel
from teachgraph.client.llm import MODES
from teachgraph.export import register as export_format
from teachgraph.gates import KEEP, Gate, register as gate
from teachgraph.nodes.checks import Verdict, check

@gate("shouting")
class Shouting(Gate):
    class Settings(BaseModel):
        share: float = 0.5
    def check(self, sample):
        text = sample.response
        upper = sum(c.isupper() for c in text) / max(1, sum(c.isalpha() for c in text))
        return self.drop(f"{upper:.0%} upper case") if upper > self.settings.share else KEEP

@MODES.register("xml_tags")
def xml_tags(schema):
    return {"stop": ["</reply>"]}

@export_format("plain", features=None, layout="lines")
def plain(item):
    return {"text": item.sample["messages"][-1]["content"]}

@check("not_empty")
def not_empty(item, response):
    return Verdict("not_empty", bool(response))
'''


def test_a_plugin_registers_through_entry_points_like_the_built_ins(tmp_path):
    """A distribution on sys.path with entry points in the teachgraph.* groups: its gate, response mode,
    export format and check are found by name, next to the built-ins, without teachgraph importing it."""
    (tmp_path / "tg_plugin.py").write_text(PLUGIN)
    info = tmp_path / "tg_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tg-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("\n".join(
        f"[teachgraph.{group}]\nplugin = tg_plugin\n" for group in ("gates", "response_modes", "export_formats",
                                                                  "checks")))
    probe = textwrap.dedent("""
        from teachgraph.client.llm import MODES, structured_request
        from teachgraph.export import FORMATS
        from teachgraph.gates import ChatSample, make_gate
        from teachgraph.nodes.checks import CHECKS
        row = {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "NO WAY"}]}
        verdict = make_gate("shouting", share=0.4).check(ChatSample.from_row(row, "a"))
        print(verdict.gate, verdict.reason)
        print(structured_request("xml_tags", object), "xml_tags" in MODES)
        print(FORMATS.get("plain").layout, "hf" in FORMATS, CHECKS.get("not_empty").name, "choice_key" in CHECKS)
    """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["shouting 100% upper case", "{'stop': ['</reply>']} True",
                                       "lines True not_empty True"]

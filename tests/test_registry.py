"""Method registry, named sets and plugins (entry points and --plugin modules)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import methods
from methods.base import Distiller
from methods.registry import UnknownMethodError, register


def test_builtin_methods_registered_with_regimes() -> None:
    names = methods.available()
    assert {"baseline", "kd"} <= set(names)
    for name in names:
        cls = methods.get(name)
        assert cls.name == name
        assert cls.summary, f"{name} has no summary line"
        assert cls.regimes and set(cls.main_regimes) <= set(cls.regimes)


def test_unknown_method_suggests_close_names() -> None:
    with pytest.raises(UnknownMethodError, match="Did you mean kd"):
        methods.get("kdd")


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register("kd")
        class Other(Distiller):  # pragma: no cover - never instantiated
            pass


def test_expand_sets_keep_order_and_drop_repeats() -> None:
    assert methods.expand_methods("kd,baseline,kd") == ["kd", "baseline"]
    assert methods.expand_methods("all") == sorted(methods.available())


PLUGIN = '''
from typing import ClassVar
import torch.nn.functional as F
from methods import Distiller, register


@register("{name}")
class HalfCE(Distiller):
    """Test plugin: cross-entropy at half weight."""

    summary: ClassVar[str] = "test plugin: half-weight cross-entropy"
    regimes: ClassVar[frozenset[str]] = frozenset({{"unpaired", "all"}})
    main_regimes: ClassVar[frozenset[str]] = frozenset({{"unpaired"}})
    default_weights: ClassVar[dict[str, float]] = {{"ce": 0.5}}
    needs_teacher: ClassVar[bool] = False

    def losses(self, s, t, batch):
        return {{"ce": F.cross_entropy(s.logits, batch.y)}}
'''


def _write_plugin(tmp_path: Path, module: str, name: str) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))


def test_plugin_module_listed_by_cli(tmp_path: Path) -> None:
    _write_plugin(tmp_path, "my_kd_plugin", "half-ce")
    out = subprocess.run(
        [sys.executable, "-m", "benchmark", "list", "--plugin", "my_kd_plugin"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    ).stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("half-ce"))
    assert "unpaired,all" in line and "test plugin" in line


def test_plugin_runs_through_the_cli(tmp_path: Path) -> None:
    _write_plugin(tmp_path, "my_run_plugin", "half-ce-run")
    res = subprocess.run(
        [sys.executable, "-m", "benchmark", "--plugin", "my_run_plugin", "--methods", "half-ce-run",
         "--data", "synth", "--regimes", "unpaired", "--seeds", "0", "--profile", "smoke",
         "--out", str(tmp_path / "out"), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr
    run_file = tmp_path / "out" / "runs" / "synth" / "unpaired" / "half-ce-run" / "seed0.json"
    assert run_file.exists()
    assert '"status": "ok"' in run_file.read_text()


def test_entry_point_plugins_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_plugin(tmp_path, "ep_plugin_mod", "ep-half-ce")
    monkeypatch.syspath_prepend(str(tmp_path))
    from importlib.metadata import EntryPoint

    import methods.registry as reg

    ep = EntryPoint(name="ep-half-ce", value="ep_plugin_mod", group=reg.ENTRY_POINT_GROUP)
    monkeypatch.setattr(reg, "entry_points", lambda group: [ep] if group == reg.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(reg, "_loaded_entry_points", False)
    assert "ep-half-ce" in methods.available()


def test_unknown_plugin_module_message() -> None:
    with pytest.raises(ModuleNotFoundError, match="--plugin"):
        methods.load_plugin("no_such_module_xyz")

"""The package layering, read from every module's imports (function-level ones too).

``benchmark`` imports ``methods`` and ``datasets``; ``methods`` never imports
``benchmark`` and imports from ``datasets`` only the leaf :mod:`datasets.regimes`;
``datasets`` never imports ``methods`` or ``benchmark``. Inside ``benchmark`` the
sub-packages follow a run's flow: orchestration -> training -> settings, models,
analysis; reporting reads run files and never reaches the orchestration or the
training loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# sub-package of benchmark -> the sub-packages it may import
BENCHMARK_LAYERS = {
    "settings": set(),
    "models": set(),
    "analysis": set(),
    "training": {"settings", "models", "analysis"},
    "reporting": {"analysis", "training"},
    "orchestration": {"settings", "training", "reporting", "models", "analysis"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)
    return names


def project_imports(path: Path) -> set[str]:
    return {n for n in imported_modules(path) if n.split(".")[0] in {"benchmark", "methods", "datasets"}}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_resolver_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    # a wrong resolver would make every rule below pass vacuously
    found = project_imports(ROOT / "benchmark" / "training" / "teacher.py")
    assert "benchmark.training.train" in found and "benchmark.settings.config" in found
    assert "datasets.regimes.Regime" in found


@pytest.mark.parametrize("path", modules("methods"), ids=lambda p: p.name)
def test_methods_import_no_benchmark_and_only_the_regimes_of_datasets(path: Path) -> None:
    for name in project_imports(path):
        assert not name.startswith("benchmark"), f"{path.name} imports {name}"
        if name.startswith("datasets"):
            assert name == "datasets" or name.startswith("datasets.regimes"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", modules("datasets"), ids=lambda p: p.name)
def test_datasets_import_neither_methods_nor_benchmark(path: Path) -> None:
    bad = {n for n in project_imports(path) if n.split(".")[0] in {"methods", "benchmark"}}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_the_regime_module_is_a_leaf() -> None:
    assert project_imports(ROOT / "datasets" / "regimes.py") == set()


@pytest.mark.parametrize("layer", sorted(BENCHMARK_LAYERS))
def test_benchmark_sub_packages_follow_the_flow_of_a_run(layer: str) -> None:
    allowed = BENCHMARK_LAYERS[layer] | {layer}
    for path in modules(f"benchmark/{layer}"):
        for name in project_imports(path):
            parts = name.split(".")
            if parts[0] != "benchmark" or len(parts) < 2 or parts[1] not in BENCHMARK_LAYERS:
                continue
            assert parts[1] in allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_no_import_cycles_between_benchmark_modules() -> None:
    # e.g. the teacher reaching back into the runner that imports it
    graph: dict[str, set[str]] = {}
    for path in modules("benchmark"):
        if path.name == "__init__.py" or path.parent == ROOT / "benchmark":
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        graph[name] = set()
        for imported in project_imports(path):
            while imported and not (ROOT / Path(*imported.split("."))).with_suffix(".py").is_file():
                imported = imported.rpartition(".")[0]  # benchmark.training.train.fit -> the module
            if imported and imported != name:
                graph[name].add(imported)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_python_api_survives_importing_every_sub_package() -> None:
    # a sub-package named like an API function (benchmark/report/) would replace it once imported
    import importlib

    import benchmark

    for layer in BENCHMARK_LAYERS:
        importlib.import_module(f"benchmark.{layer}")
    assert all(callable(getattr(benchmark, f)) for f in ("run", "report", "rerun"))

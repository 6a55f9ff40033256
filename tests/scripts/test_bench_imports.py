"""The bench scripts import their helpers one way, as ``scripts.bench.X``, so a test's patch on
a helper module reaches every bench that uses it. Before h-328 ``accuracy.py`` (and 37 more bench
scripts, the attack scripts and the tests) put ``scripts/bench`` on ``sys.path`` and imported
``_sim`` as a top-level module: the same file loaded twice as two module objects, and a
``monkeypatch.setattr(scripts.bench._sim, ...)`` silently did nothing to the bench. Direct runs
(``python scripts/bench/accuracy.py``) put the repo root on ``sys.path`` instead."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
HELPERS = frozenset(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
"""Every module in scripts/bench: each is some script's helper or may become one."""


def _top_level_bench_imports(path: Path) -> list[str]:
    """The imports in ``path`` that name a scripts/bench module as a top-level module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            continue
        out += [f"line {node.lineno}: {name}" for name in names if name in HELPERS]
    return out


@pytest.mark.parametrize("folder", ["scripts", "tests"])
def test_no_script_or_test_imports_a_bench_helper_as_a_top_level_module(folder: str) -> None:
    found = {}
    for path in sorted((ROOT / folder).glob("**/*.py")):
        if hits := _top_level_bench_imports(path):
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}, found


def test_a_patch_on_the_helper_module_reaches_the_accuracy_bench(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``accuracy.main`` runs each method through ``_sim.run_method``: a patch of it on
    ``scripts.bench._sim`` is what the bench calls (it raises here, so nothing trains)."""
    import scripts.bench._sim as sim
    from scripts.bench import accuracy

    assert accuracy._sim is sim

    class Reached(Exception):
        pass

    def patched(*args: object, **kwargs: object) -> None:
        raise Reached

    monkeypatch.setattr(sim, "run_method", patched)
    argv = ["--seeds", "1", "--rounds", "1", "--scenarios", "a", "--methods", "fedavg"]
    with pytest.raises(Reached):
        accuracy.main([*argv, "--out", str(tmp_path / "out.json")])


@pytest.mark.parametrize(
    "script", ["scripts/bench/accuracy.py", "scripts/bench/small_sites.py", "scripts/bench/gas.py"]
)
def test_a_bench_still_runs_directly(script: str) -> None:
    """``python scripts/bench/X.py --help`` from another folder: the script finds its helpers
    (and fedtrail) without the caller's ``PYTHONPATH``."""
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower(), done.stdout[-2000:]

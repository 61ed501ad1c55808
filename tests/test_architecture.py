"""The stage rule of docs/DESIGN.md: data flows one way, so a module imports only modules of
its own stage or of earlier ones."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Stages in data-flow order; entry points share the last stage.
STAGES = {"errors": 0, "datasets": 1, "models": 2, "losses": 3, "training": 4, "evaluation": 5,
          "main": 6, "opts": 6, "demo": 6, "util_scripts": 6, "benchmarks": 6, "scripts": 6}
ENTRY_ONLY = {"main", "opts"}   # imported by nothing but entry points (and tests)


def project_modules() -> list[Path]:
    return sorted(path for path in ROOT.rglob("*.py")
                  if path.relative_to(ROOT).parts[0] in STAGES or path.stem in STAGES
                  if ".venv" not in path.parts)


def top_level(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_top_levels(path: Path) -> set[str]:
    """The project's top-level names that `path` imports (relative imports are its own)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & STAGES.keys()


def violations(path: Path, root: Path = ROOT) -> list[str]:
    own = top_level(path, root)
    found = []
    for name in sorted(imported_top_levels(path)):
        if STAGES[name] > STAGES[own] or (name in ENTRY_ONLY and STAGES[own] < STAGES["main"]):
            found.append(f"{path.relative_to(root)} imports {name}")
    return found


def test_every_module_imports_only_its_own_or_earlier_stages():
    modules = project_modules()
    assert len(modules) > 50 and ROOT / "training" / "engine.py" in modules
    assert [v for path in modules for v in violations(path)] == []


@pytest.mark.parametrize("source, expected", [
    ("from evaluation.report import write_report\n", ["training/x.py imports evaluation"]),
    ("import opts\n", ["training/x.py imports opts"]),
    ("from training import engine\nfrom datasets import collate\nfrom .y import z\n", []),
])
def test_the_check_sees_a_backward_import(tmp_path, source, expected):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "x.py").write_text(source)
    assert violations(tmp_path / "training" / "x.py", tmp_path) == expected

"""Every third-party module the project imports is a declared dependency, so a fresh install runs what the tests ran."""
import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The project's packages, and the helpers the tests and benchmarks import by file name.
LOCAL = {"codesearch", "heads", "ablation", "probing", "attention", "comparison", "training", "tracking", "report", "patching",
         "experiments", "sweeps", "benchmarks", "tests"}
LOCAL |= {path.stem for folder in ("tests", "benchmarks") for path in (ROOT / folder).glob("*.py")}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extra: str | None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {_normalise(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def _imported_modules(folders: list[str]) -> dict[str, Path]:
    found = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path)
    return {m: p for m, p in found.items() if m not in sys.stdlib_module_names and m not in LOCAL}


def _undeclared(folders: list[str], extra: str | None) -> list[str]:
    distributions = metadata.packages_distributions()
    declared = _declared(extra)
    missing = []
    for module, path in sorted(_imported_modules(folders).items()):
        owners = {_normalise(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            missing.append(f"{module} ({path.relative_to(ROOT)}) from {sorted(owners)}")
    return missing


def test_package_imports_are_runtime_dependencies():
    assert _undeclared(["codesearch", "heads", "ablation", "probing", "comparison", "training", "report",
                        "experiments", "sweeps"], None) == []


def test_test_and_benchmark_imports_are_dev_dependencies():
    assert _undeclared(["tests", "benchmarks"], "dev") == []


def test_torch_is_a_range_and_the_makefile_installs_a_pinned_build_first():
    """A GPU user's `pip install` keeps the CUDA build already there; a machine like CI's gets the served build."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch,) = [r for r in project["dependencies"] if re.match(r"torch\b", r)]
    assert "==" not in torch and ">=" in torch and "<" in torch
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^TORCH \?= (torch==[\d.]+)$", makefile, re.M)
    assert pinned and makefile.count("pip install --quiet $(TORCH)") == 2
    lower, upper = re.search(r">=([\d.]+),<([\d.]+)", torch).groups()
    version = tuple(int(p) for p in pinned.group(1).split("==")[1].split("."))
    assert tuple(int(p) for p in lower.split(".")) <= version < tuple(int(p) for p in upper.split("."))

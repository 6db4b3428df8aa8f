"""The dependency direction: search/cli -> search -> tracking -> siamese, never upwards."""

import ast
import subprocess
import sys
from pathlib import Path


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_core_imports_no_optuna_mlflow_or_click() -> None:
    loaded = _imported_after(
        "import siamese, siamese.train, siamese.data, siamese.diagnosis, siamese.model"
    )
    assert "torch" in loaded  # the import really happened
    assert not loaded & {"optuna", "mlflow", "click"}


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("siamese", "tracking", "search")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources() -> dict[str, set[str]]:
    files = (p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py")))
    return {str(p.relative_to(ROOT)): _imports(p) for p in files}


def _importing(prefix: str) -> set[str]:
    return {
        path
        for path, modules in _sources().items()
        if any(m == prefix or m.startswith(prefix + ".") for m in modules)
    }


def test_only_the_cli_package_imports_click() -> None:
    assert _importing("click")  # the scan sees imports at all
    assert all(path.startswith("search/cli/") for path in _importing("click"))


def test_arrows_point_down() -> None:
    assert not {p for p in _importing("optuna") if not p.startswith("search/")}
    assert not {p for p in _importing("mlflow") if p.startswith("siamese/")}
    assert not {p for p in _importing("search") if not p.startswith("search/")}
    assert not {p for p in _importing("tracking") if p.startswith("siamese/")}


def test_only_the_cli_imports_the_cli_and_commands_do_not_import_each_other() -> None:
    users = _importing("search.cli")
    assert all(path.startswith("search/cli/") for path in users)
    for path, modules in _sources().items():
        if path.startswith("search/cli/") and not path.endswith("__init__.py"):
            others = {m for m in modules if m.startswith("search.cli.")} - {"search.cli.common"}
            assert not others, f"{path} imports the commands {others}"


def test_the_library_never_starts_its_own_command_line() -> None:
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "search/cli/" not in path.as_posix():
                assert '"search.cli"' not in path.read_text(), path

"""The import directions docs/architecture.md states, checked on the source (no imports run).

Each rule names a layer and what it may not import. Lazy imports inside functions count too:
a layer rule that only held at module level would not keep the UI out of the library.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "difffusr_cli"
MAX_LINES = 500

# The command-line layer: the only place that renders to a console.
CLI_PREFIXES = ("difffusr_cli.cli",)
UI_PACKAGES = ("rich", "typer", "click", "tqdm")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file, as absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(path): path for path in SOURCES}


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports_of(prefix: str) -> dict[str, set[str]]:
    return {name: imported_names(path) for name, path in MODULES.items() if is_under(name, prefix)}


def violations(importers: dict[str, set[str]], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in importers.items()
        for name in names
        if any(is_under(name, bad) for bad in forbidden)
    )


def test_networks_and_samplers_know_nothing_of_files_or_the_cli() -> None:
    allowed_own = (
        "difffusr_cli.models",
        "difffusr_cli.diffusion",
        "difffusr_cli.upsample",
        "difffusr_cli.bands",
        "difffusr_cli.errors",
    )
    importers = {**imports_of("difffusr_cli.models"), **imports_of("difffusr_cli.diffusion")}
    bad = sorted(
        f"{module} imports {name}"
        for module, names in importers.items()
        for name in names
        if name.split(".")[0] not in (*sys.stdlib_module_names, "torch", "numpy", "difffusr_cli")
        or (name.startswith("difffusr_cli.") and not any(is_under(name, a) for a in allowed_own))
    )
    assert not bad, bad


def test_readers_and_writers_do_not_import_models() -> None:
    forbidden = (
        "torch",
        "difffusr_cli.models",
        "difffusr_cli.diffusion",
        "difffusr_cli.train",
        "difffusr_cli.evaluate",
        "difffusr_cli.superres",
    )
    assert not violations(imports_of("difffusr_cli.io"), forbidden)


def test_the_library_never_renders_and_never_imports_the_cli() -> None:
    library = {
        name: imported_names(path)
        for name, path in MODULES.items()
        if not any(is_under(name, cli) for cli in CLI_PREFIXES)
    }
    bad = violations(library, (*UI_PACKAGES, *CLI_PREFIXES))
    assert not bad, bad


def test_training_and_evaluation_do_not_import_each_other() -> None:
    assert not violations(imports_of("difffusr_cli.train"), ("difffusr_cli.evaluate",))
    assert not violations(imports_of("difffusr_cli.evaluate"), ("difffusr_cli.train",))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_a_kitchen(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines (split it by responsibility)"

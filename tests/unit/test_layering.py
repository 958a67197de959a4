"""Imports run one way down the pipeline: records at the bottom, readers never
import their dispatcher, parse never imports extract (read from the source)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailguard"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported mailguard module, at module level?) for every import outside
    `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mailguard"):
            out.extend((f"{node.module}.{a.name}", top) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name, top) for a in node.names if a.name.startswith("mailguard"))
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    for node in tree.body:
        visit(node, True)
    return out


def test_records_import_nothing_of_ours():
    assert _imports(PACKAGE / "records.py") == []


def test_charsets_sit_below_parse_and_extract():
    assert _imports(PACKAGE / "charsets.py") == []
    assert not any(m.startswith("mailguard.extract") for m, _ in _imports(PACKAGE / "parse.py"))


READERS = sorted(p for p in (PACKAGE / "extract").glob("*.py")
                 if p.name not in ("__init__.py", "dispatch.py"))


@pytest.mark.parametrize("path", READERS, ids=lambda p: p.name)
def test_readers_recurse_through_their_context_not_the_dispatcher(path):
    for module, _top in _imports(path):
        assert not module.startswith("mailguard.extract.dispatch"), module
        # The package itself wires the dispatcher in: a reader imports submodules only.
        head, _, name = module.rpartition(".")
        assert head != "mailguard.extract" or (PACKAGE / "extract" / f"{name}.py").exists(), module
        assert not module.startswith(("mailguard.scan", "mailguard.pipeline")), module


@pytest.mark.parametrize("name", ["scan.py", "parse.py", "charsets.py", "records.py",
                                  *(f"extract/{p.name}" for p in sorted((PACKAGE / "extract").glob("*.py")))])
def test_no_function_level_imports_of_ours(name):
    assert [m for m, top in _imports(PACKAGE / name) if not top] == []

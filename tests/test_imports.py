"""The packages import one way: every import of every module is in the table.

Each import statement of pcapreset (at the top, inside functions, under
``TYPE_CHECKING``) is read with :mod:`ast`; an import from one package into
another must be an arrow of :data:`MAY_IMPORT`. A new arrow is a change of the
architecture (docs/architecture.md), made in this table on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pcapreset"

#: modules every package may import (errors, the Cython stand-in, the version,
#: what text output may print of untrusted strings)
BASE = {"errors", "_nocython", "_build", "__version__", "textsafe"}

#: package (or top-level module) -> the packages it may import, beyond BASE.
#: The stages, lowest first: capture -> track -> interpret -> report; the
#: engine runs them and fills what they read of the connections it summarised
#: (the stages never import it); nginx ties logs to the report; api and cli
#: are on top, notebook and cluster (many hosts on Dask, each one api.analyze)
#: on the api; cluster types its tables as notebook does (notebook.dtypes).
MAY_IMPORT: dict[str, set[str]] = {
    "capture": set(),
    "track": {"capture"},
    "interpret": {"capture", "track"},
    "report": {"capture", "track", "interpret"},
    "engine": {"capture", "track", "interpret", "report"},
    "nginx": {"track", "interpret", "engine"},
    "api": {"capture", "engine", "report", "nginx"},
    "notebook": {"api", "capture", "track", "interpret", "engine", "report"},
    "cluster": {"api", "interpret", "report", "notebook"},
    "cli": {"api", "engine", "interpret", "report", "notebook", "cluster"},
    "__main__": {"cli"},
    "__init__": {"api", "notebook", "cluster"},
    "errors": set(),
    "textsafe": set(),
    "_build": set(),
    "_nocython": set(),
}


def _unit(parts: list[str]) -> str:
    """The package (or top-level module) of a module path under pcapreset."""
    return parts[0] if parts else "__init__"


def imports_of(path: Path, root: Path = PKG) -> list[tuple[int, str]]:
    """(line, unit imported) for each import of a pcapreset module in ``path``
    (a module of the package at ``root``)."""
    rel = path.relative_to(root).with_suffix("").parts
    pkg = list(rel[:-1])  # the package the module is in (its __init__: itself)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "pcapreset":
                mod = node.module.split(".")[1:]
            else:
                continue
            if mod:
                out.append((node.lineno, _unit(mod)))
            else:  # from pcapreset import x, y (or from .. import x)
                out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "pcapreset" and len(parts) > 1:
                    out.append((node.lineno, parts[1]))
    return out


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_package_and_module_is_in_the_table() -> None:
    units = {_unit(list(p.relative_to(PKG).with_suffix("").parts)) for p in modules()}
    assert units <= set(MAY_IMPORT) | {"__init__"}, sorted(units - set(MAY_IMPORT))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_table(path: Path) -> None:
    unit = _unit(list(path.relative_to(PKG).with_suffix("").parts))
    allowed = MAY_IMPORT[unit] | BASE | {unit}
    bad = [f"line {n}: {unit} -> {to}" for n, to in imports_of(path) if to not in allowed]
    assert not bad, f"{path.relative_to(PKG)} imports against the table: {bad}"


def test_the_stages_never_import_the_engine() -> None:
    """The speed and memory wing stays behind the engine: the stages define
    what they read of it (protocols) and the engine fills them."""
    stages = ("capture", "track", "interpret", "report")
    assert [s for s in stages if "engine" in MAY_IMPORT[s]] == []


def test_the_table_has_no_circle() -> None:
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(u: str, path: list[str]) -> None:
        if seen.get(u) == 2:
            return
        assert seen.get(u) != 1, f"import circle: {' -> '.join([*path, u])}"
        seen[u] = 1
        for v in sorted(MAY_IMPORT.get(u, ())):
            visit(v, [*path, u])
        seen[u] = 2

    for u in MAY_IMPORT:
        visit(u, [])


def test_the_check_sees_a_wrong_arrow(tmp_path: Path) -> None:
    """The parser finds relative, absolute and function-level imports."""
    f = tmp_path / "pcapreset" / "track" / "probe.py"
    f.parent.mkdir(parents=True)
    f.write_text(
        "from ..report import model\n"
        "from . import flows\n"
        "def g():\n"
        "    import pcapreset.engine.run\n"
        "    from pcapreset.interpret.rules import CAUSES\n"
        "    from .. import errors\n"
    )
    got = [to for _n, to in imports_of(f, tmp_path / "pcapreset")]
    assert got == ["report", "track", "engine", "interpret", "errors"]

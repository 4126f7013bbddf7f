"""The package imports one way only, as ARCHITECTURE.md's table says.

Every module of ``cnnblas/`` is parsed (not imported), each import it makes
(top-level or inside a function) is mapped to a row of the table, and the
test fails when the row of the importer does not list the row of the
imported module. The installed package must never import the source
checkout's ``benchmarks``, ``tests`` or ``notebooks``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnnblas"
CHECKOUT_ONLY = ("benchmarks", "tests", "notebooks")


def read_layers(text: str) -> dict[str, set[str] | None]:
    """ARCHITECTURE.md's table as {place: places it may import}; None means everything."""
    layers: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`cnnblas[\w.]*`", cells[0]):
            continue
        allowed = cells[2]
        if allowed == "everything":
            layers[cells[0].strip("`")] = None
        else:
            layers[cells[0].strip("`")] = set(re.findall(r"`(cnnblas[\w.]*)`", allowed))
    return layers


LAYERS = read_layers((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def place_of(module: str) -> str:
    """The row of ``module``: the longest place that is the module or one of its parents."""
    matches = [place for place in LAYERS if module == place or module.startswith(place + ".")]
    return max(matches, key=len)


def is_module(dotted: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, relative ones resolved.

    ``from cnnblas import x`` counts as importing ``cnnblas.x`` when x is a
    module, and as importing the package root ``cnnblas`` otherwise.
    """
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.append((node.lineno, candidate if is_module(candidate, root) else source))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_table_is_read():
    assert {"cnnblas._kernels", "cnnblas.ops", "cnnblas.nn", "cnnblas.cli", "cnnblas"} <= set(
        LAYERS)
    assert LAYERS["cnnblas._kernels"] == set()
    assert LAYERS["cnnblas.cli"] is None


def test_every_module_has_a_row():
    """A new module or package needs its own row (only the namespace files sit at the root)."""
    homeless = [str(path.relative_to(ROOT)) for path in SOURCES
                if place_of(module_name(path)) == "cnnblas"
                and path.relative_to(PACKAGE).as_posix() not in ("__init__.py", "__main__.py")]
    assert not homeless, f"modules with no row in ARCHITECTURE.md: {homeless}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    importer = place_of(module_name(path))
    allowed = LAYERS[importer]
    wrong = []
    for line, module in imported_modules(path):
        top = module.split(".")[0]
        if top in CHECKOUT_ONLY:
            wrong.append(f"line {line}: {module} (the installed package has no {top}/)")
        elif top == "cnnblas" and allowed is not None:
            target = place_of(module)
            if target != importer and target not in allowed:
                wrong.append(f"line {line}: {module} (row {target})")
    may_import = "everything" if allowed is None else sorted(allowed)
    assert not wrong, (f"{path.relative_to(ROOT)} (row {importer}, may import {may_import}) "
                       "imports: " + "; ".join(wrong))


def test_the_parser_sees_every_kind_of_import(tmp_path):
    """Function-level, relative and ``from package import module`` imports are all
    found, so the test above can fail."""
    (tmp_path / "cnnblas" / "ops").mkdir(parents=True)
    (tmp_path / "cnnblas" / "nn.py").write_text("")
    probe = tmp_path / "cnnblas" / "ops" / "probe.py"
    probe.write_text("def f():\n    from ..train import Trainer\n    import benchmarks.report\n"
                     "from cnnblas import nn, __version__\n")
    found = sorted(imported_modules(probe, tmp_path))
    assert found == [(2, "cnnblas.train"), (3, "benchmarks.report"), (4, "cnnblas"),
                     (4, "cnnblas.nn")]
    assert place_of("cnnblas.train.trainer") == "cnnblas.train"

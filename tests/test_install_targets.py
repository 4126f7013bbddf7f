"""The Makefile's install targets: `make train` installs the core and the
embedded data set only; test, lint, bench and report add the test extras,
MPICH and PyTorch."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")

HEAVY = ("torch", "mpi4py", "mpich", "ipykernel", "nbclient", "jupyter", "pytest")


def parse_makefile() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(prerequisites, recipe lines)`` per target, with ``$(NAME)`` variables
    expanded (enough of make's syntax for this Makefile)."""
    variables: dict[str, str] = {}
    prerequisites: dict[str, list[str]] = {}
    recipes: dict[str, list[str]] = {}
    target = None

    def expand(text: str) -> str:
        while (match := re.search(r"\$\((\w+)\)", text)):
            text = text.replace(match.group(0), variables.get(match.group(1), ""))
        return text

    lines = (REPO / "Makefile").read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        if line.startswith("\t"):
            if target is not None:
                recipes[target].append(expand(line.strip()))
            continue
        target = None
        if line.startswith("#") or not line.strip():
            continue
        if (assignment := re.match(r"(\w+)\s*(?::=|\?=|=)\s*(.*)$", line)):
            variables[assignment.group(1)] = expand(assignment.group(2).strip())
        elif (rule := re.match(r"([^:=\s][^:=]*):(?!=)(.*)$", line)):
            target = expand(rule.group(1).strip())
            prerequisites[target] = expand(rule.group(2)).split()
            recipes[target] = []
    return prerequisites, recipes


def recipe_of(goal: str) -> list[str]:
    """Every recipe line ``make goal`` may run, prerequisites first."""
    prerequisites, recipes = parse_makefile()
    lines: list[str] = []
    seen: set[str] = set()

    def visit(target: str) -> None:
        if target in seen:
            return
        seen.add(target)
        for prerequisite in prerequisites.get(target, []):
            visit(prerequisite)
        lines.extend(recipes.get(target, []))

    visit(goal)
    return lines


def installed_packages(lines: list[str]) -> set[str]:
    """The distributions the ``pip install`` lines name, extras resolved with
    pyproject.toml (``-e '.[a,b]'`` gives the core and extras a and b)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names: set[str] = set()
    for line in lines:
        if "pip install" not in line or "--upgrade pip" in line:
            continue
        for word in line.split("pip install", 1)[1].split():
            word = word.strip("'\"")
            if word.startswith("-") and word != "-e" or word in ("-e", "||"):
                continue
            if word == "echo":
                break
            if (local := re.fullmatch(r"\.(?:\[(.*)\])?", word)):
                requirements = list(project["dependencies"])
                for extra in filter(None, (local.group(1) or "").split(",")):
                    requirements += extras[extra]
            else:
                requirements = [word]
            names |= {re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower()
                      for req in requirements}
    return names


def test_make_train_installs_the_core_and_the_data_set_only():
    lines = recipe_of("train")
    packages = installed_packages(lines)
    assert {"numpy", "numba", "scipy", "tqdm", "scikit-learn"} <= packages, packages
    assert not [name for name in packages if name.startswith(HEAVY)], packages
    assert any(line.endswith("cnnblas warmup") for line in lines)
    assert lines[-1].endswith("cnnblas train")


@pytest.mark.parametrize("goal", ["test", "lint", "bench", "report"])
def test_the_test_targets_add_the_test_extras_mpi_and_torch(goal):
    lines = recipe_of(goal)
    packages = installed_packages(lines)
    assert {"pytest", "ruff", "torch", "mpi4py", "mpich", "ipykernel", "scikit-learn"} <= \
        packages, packages
    assert any(line.endswith("cnnblas warmup") for line in lines)


def test_the_ci_script_runs_make_test():
    # A clean clone with a bare Python goes through both installs.
    assert "make test" in (REPO / ".ci" / "run").read_text()

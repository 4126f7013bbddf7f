"""`cnnblas warmup`: progress on stderr, and every kernel signature the README's
Python examples use compiled (or loaded) by the warm-up itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO

# Runs `cnnblas warmup`, notes every kernel signature the process then holds,
# runs the example, and prints the signatures the example added (each would
# have been compiled on a first run after a warm-up).
PROBE = """
import importlib, json, pkgutil, sys
import cnnblas._kernels as kernels
from cnnblas.cli import main

def held():
    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"cnnblas._kernels.{info.name}")
        for name, obj in vars(module).items():
            if hasattr(obj, "signatures") and hasattr(obj, "stats"):
                found[f"{info.name}.{name}"] = {str(sig) for sig in obj.signatures}
    return found

main(["warmup"])
before = held()
exec(compile(sys.stdin.read(), "README example", "exec"), {"__name__": "__main__"})
added = {name: sorted(sigs - before.get(name, set())) for name, sigs in held().items()}
print(json.dumps({name: sigs for name, sigs in added.items() if sigs}))
"""


def readme_python_blocks() -> list[str]:
    """The README's ```python blocks under "Use it from Python", in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_warmup_reports_progress_and_covers_the_readme_examples():
    blocks = readme_python_blocks()
    first = blocks[0]
    assert "cb.conv2d(" in first and "cb.im2col(" in first
    residual = next(block for block in blocks if "class Residual" in block)
    example = "\n".join([
        first, "from cnnblas import nn", residual,
        "block = Residual(4)",
        "out = block(np.ones((2, 4, 6, 6), np.float32))",
        "block.backward(np.ones_like(out))",
    ])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", PROBE], input=example, env=env,
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    total = len(lines)
    assert total >= 8, result.stderr
    assert lines[0].startswith(f"[1/{total}] float32") and lines[-1].startswith(f"[{total}/")
    assert "kernels ready in" in result.stdout
    added = json.loads(result.stdout.strip().splitlines()[-1])
    assert added == {}, f"compiled after the warm-up: {added}"

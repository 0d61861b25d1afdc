"""Load a repository script (benchmarks/, scripts/) as a module, for the tests of its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """``relative`` (e.g. "benchmarks/engine.py") as a module named after its file.

    benchmarks/ and scripts/ go on sys.path first (the benchmarks import each other and the
    config helpers in scripts/), and the module is registered in sys.modules before it runs
    (dataclasses look their module up while a class is made)."""
    for folder in ("scripts", "benchmarks"):
        if str(ROOT / folder) not in sys.path:
            sys.path.insert(0, str(ROOT / folder))
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module

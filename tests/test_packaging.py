"""Packaging rules.

The simulation core (``vmwidgets/core``) must stay free of any UI library so
that it can be used, tested and benchmarked without Jupyter. Only the widget
layer on top of it may import ipywidgets, matplotlib and friends.
"""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path


# Top-level module names the core must never import.
UI_LIBRARIES = ("ipywidgets", "matplotlib", "networkx", "IPython", "traitlets")


def _is_ui(module_name: str) -> bool:
    top = module_name.split(".")[0]
    return top in UI_LIBRARIES


def _core_dir(repo_root: Path) -> Path:
    return repo_root / "vmwidgets" / "core"


def _core_sources(repo_root: Path) -> list[Path]:
    files = sorted(_core_dir(repo_root).rglob("*.py"))
    assert files, "vmwidgets/core has no Python files: the simulation core is missing"
    return files


def _require_core_package(repo_root: Path) -> None:
    assert (_core_dir(repo_root) / "__init__.py").is_file(), (
        "vmwidgets/core/__init__.py does not exist: vmwidgets.core is not a package yet"
    )


def _ui_imports_in(source: str, filename: str) -> list[str]:
    """Return 'line N: module' for every UI import found in ``source``.

    Catches ``import x``, ``from x import y`` and literal dynamic imports such
    as ``importlib.import_module("x")`` or ``__import__("x")``.
    """
    found = []
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:  # relative imports stay inside vmwidgets
                names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            func_name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if func_name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    names = [arg.value]
        found += [f"line {node.lineno}: {name}" for name in names if _is_ui(name)]
    return found


def test_ui_import_scanner_finds_imports():
    """The scanner itself works (so an empty result below means something)."""
    source = textwrap.dedent(
        """
        import os, matplotlib.pyplot as plt
        from ipywidgets import HBox
        from . import traitlets
        import importlib
        importlib.import_module("networkx")
        __import__("IPython.display")
        import sortedcontainers
        """
    )
    assert _ui_imports_in(source, "<example>") == [
        "line 2: matplotlib.pyplot",
        "line 3: ipywidgets",
        "line 6: networkx",
        "line 7: IPython.display",
    ]


def test_core_sources_import_no_ui_library(repo_root):
    problems = []
    for path in _core_sources(repo_root):
        rel = path.relative_to(repo_root)
        problems += [f"{rel} {hit}" for hit in _ui_imports_in(path.read_text("utf-8"), str(rel))]
    assert not problems, "vmwidgets/core imports UI libraries:\n" + "\n".join(problems)


def _modules_after(code: str, repo_root: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the UI libraries it loaded."""
    script = code + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({UI_LIBRARIES!r}))))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"the import failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_core_alone_loads_no_ui_library(repo_root):
    """``vmwidgets/core`` by itself, without running ``vmwidgets/__init__.py``."""
    _require_core_package(repo_root)
    code = textwrap.dedent(
        f"""
        import sys, types
        parent = types.ModuleType("vmwidgets")
        parent.__path__ = [{str(repo_root / "vmwidgets")!r}]
        sys.modules["vmwidgets"] = parent
        import vmwidgets.core
        """
    )
    loaded = _modules_after(code, repo_root)
    assert not loaded, f"importing vmwidgets/core loaded UI libraries: {loaded}"


def test_import_vmwidgets_core_loads_no_ui_library(repo_root):
    """``import vmwidgets.core`` as a user would write it (this also runs
    ``vmwidgets/__init__.py``, which must therefore import UI code lazily)."""
    _require_core_package(repo_root)
    loaded = _modules_after("import vmwidgets.core\n", repo_root)
    assert not loaded, (
        f"`import vmwidgets.core` loaded UI libraries: {loaded}. If the test "
        "above passes, they come from vmwidgets/__init__.py, not from the core."
    )

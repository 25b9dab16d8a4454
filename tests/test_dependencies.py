"""setup.py declares what the package imports, and nothing it does not (checked on the source, not on
this machine's environment)."""
import ast
import os
import runpy
import sys
from importlib.metadata import packages_distributions
from unittest import mock

import setuptools

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Packages used through another package's module rather than imported by name.
USED_THROUGH = {"tensorboard": "torch.utils.tensorboard"}


def _setup_kwargs():
    with mock.patch.object(setuptools, "setup") as setup:
        runpy.run_path(os.path.join(REPO, "setup.py"), run_name="__main__")
    return setup.call_args.kwargs


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.lower().replace("_", "-")


def _imports(folder: str):
    """Top-level module names imported by the .py files under ``folder``, with the importing files."""
    found = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    found.setdefault(n.split(".")[0], set()).add(os.path.relpath(path, REPO))
                    if n in USED_THROUGH.values():
                        found.setdefault(n, set()).add(os.path.relpath(path, REPO))
    return found


def test_install_requires_matches_the_imports():
    kwargs = _setup_kwargs()
    required = {_name(r) for r in kwargs["install_requires"]}
    optional = {_name(r) for extra in kwargs["extras_require"].values() for r in extra}
    module_to_dist = packages_distributions()
    imported = _imports(os.path.join(REPO, "fastreid"))
    needed = {}
    for module, files in imported.items():
        if module in sys.stdlib_module_names or module == "fastreid" or module in USED_THROUGH.values():
            continue
        for dist in module_to_dist.get(module, [module]):
            needed.setdefault(_name(dist), set()).update(files)
    for dist, module in USED_THROUGH.items():
        if module in imported:
            needed.setdefault(dist, set()).update(imported[module])
    undeclared = {d: sorted(f)[:3] for d, f in needed.items() if d not in required | optional}
    assert not undeclared, f"imported but not in setup.py: {undeclared}"
    unused = required - set(needed)
    assert not unused, f"declared in install_requires but never imported by fastreid/: {sorted(unused)}"
    assert "scikit-learn" not in required and "scipy" in required


def test_license_is_apache_2():
    text = open(os.path.join(REPO, "LICENSE"), encoding="utf-8").read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert _setup_kwargs()["license"] == "Apache-2.0"

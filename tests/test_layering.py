"""Layering: lower floors never import higher ones, no circle of imports across packages, and inference
never loads the trainer (a real index opened and searched in a fresh process)."""
import ast
import json
import os
import subprocess
import sys
from typing import Dict, Set

from fastreid.retrieval import BuildOptions, Index, TorchExtractor, collect_images

import retrieval_helpers as rh

_SEARCH = """
import json, sys
from fastreid.retrieval import Index
index = Index.open(sys.argv[1])
hits = index.search([sys.argv[2]], k=3)[0]
print(json.dumps({"items": [h.item for h in hits],
                  "engine": sorted(m for m in sys.modules if m.startswith("fastreid.engine"))}))
"""


def test_opening_and_searching_an_index_never_imports_the_trainer(tmp_path):
    data = rh.make_data(str(tmp_path / "data"), num_patents=4)
    queries, database = rh.split_lists(data)
    cfg = rh.model_cfg(rh.make_checkpoint(str(tmp_path / "m.pth"), seed=0))
    index_dir = str(tmp_path / "index")
    Index.build(index_dir, collect_images(database), TorchExtractor(cfg), BuildOptions.from_config(cfg))
    query = collect_images(queries).paths[0]
    expected = [h.item for h in Index.open(index_dir).search([query], k=3)[0]]
    env = dict(os.environ, PYTHONPATH=rh.ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _SEARCH, index_dir, query], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["items"] == expected  # the search really ran, with the recorded model
    assert "fastreid.engine.predictor" in out["engine"]
    assert not {"fastreid.engine.trainer", "fastreid.engine.hooks", "fastreid.engine.preflight",
                "fastreid.engine.stages", "fastreid.engine.commands"} & set(out["engine"]), out["engine"]


def _package_imports() -> Dict[str, Dict[str, Set[str]]]:
    """For each ``fastreid.<package>``: the other fastreid packages each of its files imports (module-level and
    inside functions, relative imports resolved)."""
    graph: Dict[str, Dict[str, Set[str]]] = {}
    top = os.path.join(rh.ROOT, "fastreid")
    for folder, _, files in os.walk(top):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, rh.ROOT)[:-3].replace(os.sep, ".")
            parts = module.split(".")[:-1] if name != "__init__.py" else module.split(".")[:-1]
            package = ".".join(module.split(".")[:2])
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = parts[:len(parts) - node.level + 1] if node.level else []
                    targets = [".".join(base + [node.module] if node.module else base) if node.level else node.module]
                else:
                    continue
                for target in targets:
                    other = ".".join(target.split(".")[:2])
                    if target.startswith("fastreid.") and other != package:
                        graph.setdefault(package, {}).setdefault(other, set()).add(os.path.relpath(path, rh.ROOT))
    return graph


def test_utils_imports_nothing_above_it():
    assert _package_imports().get("fastreid.utils", {}) == {}


def test_no_circle_of_imports_across_packages():
    graph = {p: set(t) for p, t in _package_imports().items()}
    assert "fastreid.utils" in {t for ts in graph.values() for t in ts}  # the walk found the imports

    def circle_from(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = circle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    circles = [c for c in (circle_from(p, [p]) for p in sorted(graph)) if c]
    assert circles == [], circles

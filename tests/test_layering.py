"""Layering: inference never loads the trainer (a real index opened and searched in a fresh process)."""
import json
import os
import subprocess
import sys

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

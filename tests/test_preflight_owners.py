"""Checks live with their owners: each builder's ``validate(cfg)`` reports its own values, the preflight
loops over them (a bad gradient-clipping type is found before the first iteration, not at the first
step), and the prepared copy a loader would read is checked up front (a stale one is refused)."""
import ast
import os

import pytest

from fastreid.config import get_cfg
from fastreid.data import build as data_build
from fastreid.data.prepare import prepare_dataset
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.engine import default_argument_parser, train_loop
from fastreid.engine.commands import run_preflight
from fastreid.engine.preflight import preflight
from fastreid.evaluation import pipeline, reid_evaluation, search
from fastreid.modeling.heads import embedding_head
from fastreid.solver import lr_scheduler, optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (key, a bad value, the owner's allowed values); ``TEST.AQE.AUTO`` / ``SOLVER.AMP`` are switched on where needed.
OWNED = [
    ("MODEL.HEADS.NECK_FEAT", "afterwards", embedding_head.NECK_FEATS),
    ("TEST.SEARCH.INDEX", "hnsw", search.INDEX_TYPES),
    ("TEST.SEARCH.BACKEND", "cuda", search.BACKENDS),
    ("TEST.AQE.MODE", "both", pipeline.QE_MODES),
    ("TEST.FEAT_DTYPE", "float8", tuple(reid_evaluation.FEAT_DTYPES)),
    ("SOLVER.AMP.DTYPE", "half", train_loop.AMP_DTYPES),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "nrom", optim.CLIP_TYPES),
    ("SOLVER.OPT", "Adamm", optim.OPTIMIZERS),
    ("SOLVER.SCHED", "Cosine", lr_scheduler.SCHEDULERS),
    ("SOLVER.WARMUP_METHOD", "linearly", lr_scheduler.WARMUP_METHODS),
    ("DATALOADER.SAMPLER_TRAIN", "Sampler", data_build.TRAIN_SAMPLERS),
]


@pytest.mark.parametrize("key, bad, allowed", OWNED, ids=[k for k, _, _ in OWNED])
def test_the_preflight_reports_each_owners_values(tmp_path, key, bad, allowed):
    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.AMP.ENABLED", "True", key, bad])
    errors = preflight(cfg, train=True, evaluate=True).errors
    line = next((e for e in errors if e.startswith(f"{key} is {bad!r}")), None)
    assert line is not None, errors
    assert line.endswith("allowed: " + ", ".join(repr(a) for a in allowed))


def test_every_allowed_value_list_is_written_once():
    """Each owner's list of allowed values appears once as a literal in fastreid/ (its definition): no copy in
    the preflight, a tool or another builder can drift from it."""
    literals = []
    for folder, _, files in os.walk(os.path.join(ROOT, "fastreid")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    elts = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
                    if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and len(elts) > 1 and all(
                            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
                        literals.append((frozenset(e.value for e in elts), os.path.relpath(path, ROOT)))
    for key, _, allowed in OWNED:
        where = [path for values, path in literals if values == frozenset(allowed)]
        assert len(where) == 1, (key, where)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("owners") / "data")
    generate(root, SyntheticSpec(num_patents=8, image_size=40, seed=5, min_views=3, max_views=3), workers=1)
    return root


def _args(data, out, *opts):
    return default_argument_parser().parse_args(
        ["--config-file", os.path.join(ROOT, "configs", "demo", "demo_R18-ibn_64.yml"), "DATASETS.ROOT", data,
         "OUTPUT_DIR", out, "INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]", "DATALOADER.NUM_WORKERS",
         "0", *opts])


def test_a_bad_clip_type_is_found_before_training_not_at_the_first_step(data, tmp_path):
    report = run_preflight(_args(data, str(tmp_path / "out"), "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
                                 "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "l2"))
    assert [e for e in report.errors if "CLIP_TYPE" in e] == [
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE is 'l2'; allowed: 'value', 'norm'"]
    assert not (tmp_path / "out" / "metrics.json").exists()  # nothing ran
    assert run_preflight(_args(data, str(tmp_path / "ok"))).ok


def test_a_stale_prepared_copy_is_found_by_the_preflight(data, tmp_path):
    """The copy at the training size is prepared, then a list of the original changes: the preflight of the
    training command (what train_net runs before building anything) names the copy and the changed list."""
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.ROOT", data])
    prepare_dataset(cfg, [(32, 32)])
    assert run_preflight(_args(data, str(tmp_path / "a"))).ok
    lst = os.path.join(data, "train_data", "train_patent_trn.txt")
    text = open(lst, encoding="utf-8").read()
    try:
        with open(lst, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        errors = run_preflight(_args(data, str(tmp_path / "b"))).errors
        assert any("train_patent_trn.txt changed since the copy was prepared" in e for e in errors), errors
    finally:
        with open(lst, "w", encoding="utf-8") as f:
            f.write(text)

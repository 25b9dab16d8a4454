"""fast-reid compatibility: every fast-reid config key is implemented or accepted-and-reported, the
challenge's dataset names read the original layout, and fast-reid's import paths give our objects."""
import logging
import os
import shutil

import pytest
import torch

from fastreid.config import ConfigError, get_cfg, iter_dotted
from fastreid.config import fastreid_compat as compat
from fastreid.data.synthetic import SyntheticSpec, generate


@pytest.fixture(autouse=True)
def _fresh_run():
    compat.forget_reported()
    yield
    compat.forget_reported()


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == compat.__name__ and r.levelno == logging.WARNING]


def test_every_fastreid_key_is_implemented_or_ignored():
    ours = dict(iter_dotted(get_cfg()))
    for key in compat.FASTREID_DEFAULTS:
        status = compat.fastreid_key_status(key, set(ours))
        assert status in ("implemented", "ignored"), key
        assert (key in ours) == (status == "implemented"), key
    assert set(compat.IGNORED) <= set(compat.FASTREID_DEFAULTS)
    assert len(compat.FASTREID_DEFAULTS) == 131  # fast-reid's get_cfg() has 131 leaf keys


def test_fastreid_defaults_file_with_all_keys_loads(tmp_path):
    """A YAML holding every fast-reid key at fast-reid's default loads; ignored keys give one warning line."""
    tree = {}
    for key, value in compat.FASTREID_DEFAULTS.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    import yaml

    path = tmp_path / "fastreid_defaults.yml"
    path.write_text(yaml.safe_dump(tree))
    cfg = get_cfg()
    logger = logging.getLogger(compat.__name__)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        cfg.merge_from_file(str(path))
        cfg2 = get_cfg()
        cfg2.merge_from_file(str(path))  # the same run again: no second report
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(messages) == 1, messages
    for key in compat.IGNORED:
        assert key in messages[0]
    assert "differs" not in messages[0]
    assert cfg.MODEL.HEADS.WITH_BNNECK is False and cfg.DATALOADER.NUM_WORKERS == 8  # fast-reid's values act


def test_ignored_key_with_recipe_changing_value_warns_with_file_line(tmp_path, caplog):
    path = tmp_path / "augmix.yml"
    path.write_text("INPUT:\n  SIZE_TRAIN: [64, 64]\n  AUGMIX:\n    ENABLED: True\n    PROB: 0.0\n")
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        cfg.merge_from_file(str(path))
    msgs = _warnings(caplog)
    assert len(msgs) == 2
    assert f"INPUT.AUGMIX.ENABLED ({path}:4)" in msgs[0] and f"INPUT.AUGMIX.PROB ({path}:5)" in msgs[0]
    assert "INPUT.AUGMIX.ENABLED = True" in msgs[1] and "NO effect" in msgs[1] and "AugMix" in msgs[1]
    assert cfg.INPUT.SIZE_TRAIN == [64, 64]


def test_ignored_key_on_command_line_and_type_checked(caplog):
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        cfg.merge_from_list(["SOLVER.WEIGHT_DECAY_BIAS", "0.001", "SOLVER.BASE_LR", "0.01"])
    msgs = _warnings(caplog)
    assert "SOLVER.WEIGHT_DECAY_BIAS (command line" in msgs[0] and "0.001" in msgs[1]
    assert cfg.SOLVER.BASE_LR == 0.01
    with pytest.raises(ConfigError, match="INPUT.AUGMIX.PROB.*expects float"):
        get_cfg().merge_from_list(["INPUT.AUGMIX.PROB", "often"])


def test_unknown_keys_stay_errors_with_suggestions(tmp_path):
    for text, key in (("INPUT:\n  AUGMIX:\n    STRENGTH: 3\n", "INPUT.AUGMIX.STRENGTH"),
                      ("INPUT:\n  FLIPP:\n    ENABLED: True\n", "INPUT.FLIPP"),
                      ("KD:\n  TEACHER: x\n", "KD.TEACHER")):
        path = tmp_path / "bad.yml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"Unknown config key {key} \\(from {path}:"):
            get_cfg().merge_from_file(str(path))
    with pytest.raises(ConfigError, match="Did you mean: INPUT.FLIP"):
        get_cfg().merge_from_list(["INPUT.FLIPP.ENABLED", "True"])


def test_compat_docs_table_lists_every_key():
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                             "fastreid_compat.md"), encoding="utf-8").read()
    for key in compat.FASTREID_DEFAULTS:
        assert f"| `{key}` |" in text, key


def test_patent_names_read_the_original_layout(tmp_path):
    from fastreid.data.datasets import DATASET_REGISTRY, DeepPatent, DeepPatentTest

    root = str(tmp_path / "data")
    generate(root, SyntheticSpec(num_patents=8, image_size=16, seed=1, min_views=3, max_views=4), workers=1)
    ours, theirs = DeepPatent(root=root), DATASET_REGISTRY.get("Patent")(root=root)
    assert [p for p, _, _ in theirs.train] == [p for p, _, _ in ours.train] and len(theirs.train) > 0
    assert theirs.query == ours.query and theirs.gallery == ours.gallery
    # The original code looked for <root>/codalab_test_set.
    shutil.move(os.path.join(root, "test_data", "codalab_test_set"), os.path.join(root, "codalab_test_set"))
    test = DATASET_REGISTRY.get("PatentTest")(root=root)
    assert isinstance(test, DeepPatentTest) and not test.labeled and len(test.query) > 0
    assert all(os.path.isfile(p) for p, _, _ in test.query + test.gallery)


def test_fastreid_import_paths_are_our_objects():
    import fastreid.engine.events as events
    import fastreid.engine.hooks as hooks
    import fastreid.modeling.layers as layers
    from fastreid.data.datasets import DATASET_REGISTRY
    from fastreid.engine import AMPTrainer, SimpleTrainer
    from fastreid.layers import GeneralizedMeanPoolingP, get_norm
    from fastreid.modeling import build_model
    from fastreid.modeling.heads import REID_HEADS_REGISTRY
    from fastreid.modeling.meta_arch import build_model as meta_build_model
    from fastreid.utils import registry
    from fastreid.utils.env import seed_all_rng
    from fastreid.utils.events import EventStorage, TensorboardXWriter, get_event_storage

    assert get_norm is layers.get_norm and GeneralizedMeanPoolingP is layers.GeneralizedMeanPoolingP
    assert EventStorage is events.EventStorage and get_event_storage is events.get_event_storage
    assert TensorboardXWriter is events.TensorboardWriter
    assert meta_build_model is build_model
    assert REID_HEADS_REGISTRY is registry.HEAD_REGISTRY and DATASET_REGISTRY is registry.DATASET_REGISTRY
    # fast-reid's utils-level saver is the training hook here, one floor up: utils never imports the engine.
    with pytest.raises(ImportError, match="fastreid.engine.hooks.PeriodicCheckpointer"):
        from fastreid.utils.checkpoint import PeriodicCheckpointer  # noqa: F401
    assert hooks.PeriodicCheckpointer.__module__ == "fastreid.engine.hooks"
    assert issubclass(AMPTrainer, SimpleTrainer)
    assert seed_all_rng(7) == 7
    first = torch.rand(3)
    seed_all_rng(7)
    assert torch.equal(first, torch.rand(3))


def test_amp_trainer_runs_with_mixed_precision():
    from fastreid.engine import AMPTrainer

    model = torch.nn.Linear(4, 2)
    data = [{"x": torch.randn(8, 4)}] * 3

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, batch):
            return {"loss": self.net(batch["x"]).float().pow(2).mean()}

    before = model.weight.detach().clone()
    trainer = AMPTrainer(Loss(), data, torch.optim.SGD(model.parameters(), lr=0.1), amp_dtype="bfloat16")
    assert trainer.amp_enabled and trainer.amp_dtype == "bfloat16"
    trainer.train(0, 2, 2)
    assert not torch.equal(before, model.weight)


def test_build_dist_against_torch():
    from fastreid.utils.compute_dist import build_dist

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)
    assert build_dist(a, b).shape == (5, 7)
    assert torch.allclose(torch.from_numpy(build_dist(a, b)), torch.cdist(a, b) ** 2, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=2)
    assert torch.allclose(torch.from_numpy(build_dist(a, b, "cosine")), 1 - cos, atol=1e-5)
    with pytest.raises(ValueError, match="TEST.RERANK"):
        build_dist(a, b, "jaccard")

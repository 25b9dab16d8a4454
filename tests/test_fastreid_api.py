"""Every fast-reid import path of the compat list resolves here (or refuses with the name and the
alternative), the docs table is the list, and the protocols behind the names behave as fast-reid's."""
import importlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fastreid.compat.api import FASTREID_API, render_markdown, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("entry", [e for e in FASTREID_API if not e.refused], ids=lambda e: e.path)
def test_listed_name_imports(entry):
    module = importlib.import_module(entry.module)
    if entry.name is None:
        return
    # "from module import name", as fast-reid code writes it (a submodule name included).
    obj = getattr(module, entry.name, None)
    if obj is None:
        obj = importlib.import_module(f"{entry.module}.{entry.name}")
    assert obj is resolve(entry)


@pytest.mark.parametrize("entry", [e for e in FASTREID_API if e.refused], ids=lambda e: e.path)
def test_refused_name_says_what_instead(entry):
    with pytest.raises(ImportError) as err:
        exec(f"from {entry.module} import {entry.name}", {})
    assert entry.name in str(err.value) and "docs/fastreid_compat.md" in str(err.value)


def test_docs_table_is_the_list():
    text = open(os.path.join(ROOT, "docs", "fastreid_compat.md"), encoding="utf-8").read()
    assert render_markdown() in text
    assert "Bring your fast-reid project" in text
    assert len({e.path for e in FASTREID_API}) == len(FASTREID_API)


def test_configurable_init_and_function():
    from fastreid.config import configurable, get_cfg

    class Part:
        @configurable
        def __init__(self, *, size, scale=1.0):
            self.size, self.scale = size, scale

        @classmethod
        def from_config(cls, cfg, scale=2.0):
            return {"size": cfg.INPUT.SIZE_TEST[0], "scale": scale}

    cfg = get_cfg()
    assert vars(Part(cfg)) == {"size": cfg.INPUT.SIZE_TEST[0], "scale": 2.0}
    assert vars(Part(cfg, scale=3.0))["scale"] == 3.0
    assert vars(Part(size=5)) == {"size": 5, "scale": 1.0}

    @configurable(from_config=lambda cfg, extra=0: {"a": cfg.SOLVER.IMS_PER_BATCH + extra})
    def build(a, b=1):
        return a, b

    assert build(cfg, extra=1, b=7) == (cfg.SOLVER.IMS_PER_BATCH + 1, 7)
    assert build(3) == (3, 1)


def test_read_image_format_argument(tmp_path):
    from fastreid.data.data_utils import read_image

    path = str(tmp_path / "c.png")
    Image.fromarray(np.array([[[10, 20, 30]]], dtype=np.uint8)).save(path)
    assert np.asarray(read_image(path, "RGB"))[0, 0].tolist() == [10, 20, 30]
    assert np.asarray(read_image(path, "BGR"))[0, 0].tolist() == [30, 20, 10]
    assert read_image(path, "L").mode == "L"
    grey = np.asarray(read_image(path))[0, 0]  # ours: grayscale repeated to three channels
    assert grey[0] == grey[1] == grey[2]


def test_evaluate_rank_signature_and_weight_init():
    from fastreid.evaluation.rank import evaluate_rank
    from fastreid.layers.weight_init import weights_init_classifier, weights_init_kaiming

    dist = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]], dtype=np.float32)
    pids, cams = np.array([0, 1]), np.array([0, 0])
    cmc, aps, _ = evaluate_rank(dist, pids, np.array([0, 1, 1]), cams, np.array([1, 1, 1]), max_rank=3,
                                use_metric_cuhk03=False, use_cython=True)
    assert cmc[0] == 1.0 and aps[0] == 1.0 and aps[1] == 1.0
    with pytest.raises(NotImplementedError, match="use_metric_cuhk03"):
        evaluate_rank(dist, pids, np.array([0, 1, 1]), cams, np.array([1, 1, 1]), use_metric_cuhk03=True)
    bn, fc = torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3)
    bn.weight.data.fill_(3)
    bn.apply(weights_init_kaiming)
    fc.apply(weights_init_classifier)
    assert torch.equal(bn.weight, torch.ones(4)) and fc.weight.std() < 0.01 and torch.equal(fc.bias, torch.zeros(3))


def test_classification_head_and_evaluator():
    from fastreid.config import get_cfg
    from fastreid.engine.hooks import flatten_results_dict
    from fastreid.evaluation.clas_evaluator import ClasEvaluator
    from fastreid.modeling.heads import ClasHead
    from fastreid.utils import comm

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.FEAT_DIM, cfg.MODEL.HEADS.NUM_CLASSES = 8, 3
    cfg.MODEL.HEADS.POOL_LAYER = "FastGlobalAvgPool"
    head = ClasHead(cfg).eval()
    feats = torch.randn(5, 8, 4, 4)
    logits = head(feats)
    assert torch.allclose(logits, feats.mean(dim=(2, 3)) @ head.weight.t(), atol=1e-5)  # no BN neck by default
    head.train()
    out = head(feats, torch.tensor([0, 1, 2, 0, 1]))
    assert out["cls_outputs"].shape == (5, 3) and out["features"].shape == (5, 8)
    evaluator = ClasEvaluator(cfg)
    evaluator.reset()
    evaluator.process({"targets": torch.tensor([0, 1])}, torch.tensor([[2.0, 1.0, 0.0], [3.0, 1.0, 0.0]]))
    evaluator.process({"targets": torch.tensor([2])}, torch.tensor([[0.0, 0.0, 1.0]]))
    assert evaluator.evaluate() == pytest.approx({"Acc@1": 200 / 3, "metric": 200 / 3})
    assert comm.gather({"a": 1}) == [{"a": 1}] and comm.get_local_size() == 1
    assert flatten_results_dict({"set": {"mAP": 1.0}, "x": 2}) == {"set/mAP": 1.0, "x": 2.0}


def test_onnx_input_size_with_fastreid_sizes():
    from fastreid.config import ConfigError, get_cfg
    from fastreid.retrieval.export import onnx_input_size

    cfg = get_cfg()
    assert onnx_input_size(cfg) == (256, 128)
    cfg.INPUT.SIZE_TEST = [72]
    with pytest.raises(ConfigError, match="INPUT.SIZE_TEST is \\[72\\]"):
        onnx_input_size(cfg)
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.SIZE = True, [64]
    assert onnx_input_size(cfg) == (64, 64)


class _ProjectSet(torch.utils.data.Dataset):
    """A project's own training set (fast-reid style): random content, labels in img_items."""

    img_items = [(f"img{i}.png", f"id{i % 3}", "cam0") for i in range(12)]

    def __len__(self):
        return len(self.img_items)

    def __getitem__(self, index):
        return {"images": torch.rand(3, 8, 8), "targets": index % 3, "index": index}

    @property
    def num_classes(self):
        return 3


@pytest.mark.parametrize("sampler", ["TrainingSampler", "NaiveIdentitySampler"])
def test_project_train_set_is_drawn_by_our_samplers_with_exact_resume(sampler):
    from fastreid.config import get_cfg
    from fastreid.data.build import build_reid_train_loader

    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.SEED, cfg.SOLVER.IMS_PER_BATCH = "cpu", 5, 4
    cfg.DATALOADER.SAMPLER_TRAIN, cfg.DATALOADER.NUM_INSTANCE, cfg.DATALOADER.NUM_WORKERS = sampler, 2, 2
    loader = build_reid_train_loader(cfg, train_set=_ProjectSet())
    assert loader.dataset.num_classes == 3  # the project's attributes show through
    stream = iter(loader)
    first = [next(stream) for _ in range(3)]
    resumed = next(iter(build_reid_train_loader(cfg, start_iter=2, train_set=_ProjectSet())))
    assert torch.equal(resumed["index"], first[2]["index"]) and torch.equal(resumed["images"], first[2]["images"])
    if sampler == "NaiveIdentitySampler":  # two images of each of two identities per batch
        assert sorted(torch.bincount(first[0]["targets"], minlength=3).tolist()) == [0, 2, 2]


def test_identity_sampler_needs_the_project_set_to_list_its_items():
    from fastreid.config import ConfigError, get_cfg
    from fastreid.data.build import build_reid_train_loader

    class Unlisted(_ProjectSet):
        img_items = None

    cfg = get_cfg()
    cfg.DATALOADER.SAMPLER_TRAIN, cfg.SOLVER.IMS_PER_BATCH = "NaiveIdentitySampler", 4
    with pytest.raises(ConfigError, match="DATALOADER.SAMPLER_TRAIN is 'NaiveIdentitySampler'.*Unlisted"):
        build_reid_train_loader(cfg, train_set=Unlisted())

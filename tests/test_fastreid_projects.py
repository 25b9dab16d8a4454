"""Code written for fast-reid runs here unchanged.

The client code below is written in fast-reid's style against its documented API (nothing copied):
a classification project (its own dataset, head, evaluator and trainer, as fast-reid's FastClas is
shaped), an attribute project (a config extension, an EmbeddingHead subclass, a Baseline subclass with
``from_config`` and its own ``losses``, a multi-label evaluator, as FastAttr), a distillation project (a
Baseline subclass with a frozen teacher built from its config and checkpoint, scored by a retrieval
evaluator on ``build_dist`` + ``evaluate_rank``, as FastDistill), and dataset classes shaped like the
DIRA challenge code's ``Patent`` / ``PatentTest``. Each trains a few iterations of a ResNet18 on
64 px PNG drawings generated here in its own list format, then evaluates through its own evaluator.
"""
import csv
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import Dataset

from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg
from fastreid.data.build import _root, build_reid_test_loader, build_reid_train_loader
from fastreid.data.data_utils import read_image
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer, default_argument_parser, default_setup
from fastreid.evaluation import DatasetEvaluator, ReidEvaluator, inference_on_dataset
from fastreid.evaluation.query_expansion import aqe
from fastreid.evaluation.rank import evaluate_rank
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.heads import EmbeddingHead
from fastreid.modeling.heads.build import REID_HEADS_REGISTRY
from fastreid.modeling.meta_arch import Baseline, build_model
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer, PathManager
from fastreid.utils.compute_dist import build_dist

logger = logging.getLogger("fastreid.test_projects")
ATTRS = {0: "square", 1: "circle", 2: "bar"}

# ---- data: drawings with up to three marks; each project writes its own list format ----------------


def draw(marks, seed, size=(64, 64)):
    """A white sheet (width, height) with a square, a circle and/or a bar, jittered by ``seed``."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", size, 255)
    d = ImageDraw.Draw(img)
    w, h = size
    j = lambda: int(rng.integers(-3, 4))  # noqa: E731
    if marks[0]:
        d.rectangle([6 + j(), 6 + j(), 24 + j(), 24 + j()], outline=0, width=2)
    if marks[1]:
        d.ellipse([w - 28 + j(), h - 28 + j(), w - 8 + j(), h - 8 + j()], outline=0, width=2)
    if marks[2]:
        d.line([8 + j(), h // 2 + j(), w - 8 + j(), h // 2 + j()], fill=0, width=3)
    return img


def marks_of(cls):
    return [(cls >> b) & 1 for b in range(3)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("fastreid_projects")
    # Classification: <root>/shape_classes/{train,val}.csv rows "file,class name".
    clas = base / "shape_classes"
    clas.mkdir()
    for split, n in (("train", 4), ("val", 2)):
        with open(clas / f"{split}.csv", "w", newline="") as f:
            for c in range(1, 8):
                for i in range(n):
                    name = f"{split}_{c}_{i}.png"
                    draw(marks_of(c), seed=100 * c + i + (50 if split == "val" else 0)).save(clas / name)
                    csv.writer(f).writerow([name, f"kind{c}"])
    # Attributes: <root>/shape_attrs/{train,test}.txt lines "file a0 a1 a2".
    attrs = base / "shape_attrs"
    attrs.mkdir()
    for split, n in (("train", 3), ("test", 1)):
        with open(attrs / f"{split}.txt", "w") as f:
            for c in range(8):
                for i in range(n):
                    name = f"{split}_{c}_{i}.png"
                    draw(marks_of(c), seed=7 * c + i + (500 if split == "test" else 0)).save(attrs / name)
                    f.write(f"{name} {' '.join(map(str, marks_of(c)))}\n")
    # Challenge layout: train_data/patent_data/<patent>/<view>.png (80 x 64, not square), lists
    # "<relative path> <patent>", and codalab_test_set/{queries,database,lists} with paths only.
    data = base / "train_data" / "patent_data"
    lists = {k: [] for k in ("trn", "query", "db")}
    for pid in range(1, 13):
        views = [f"{pid:03d}/{v}.png" for v in range(4)]
        for v, rel in enumerate(views):
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            draw(marks_of(pid % 8), seed=1000 + 10 * pid + v, size=(80, 64)).save(data / rel)
        if pid <= 8:
            lists["trn"] += [f"{rel} {pid}" for rel in views]
        else:
            lists["query"].append(f"{views[0]} {pid}")
            lists["db"] += [f"{rel} {pid}" for rel in views[1:]]
    for key, name in (("trn", "train_patent_trn.txt"), ("query", "val_query_patent.txt"), ("db", "val_db_patent.txt")):
        (base / "train_data" / name).write_text("\n".join(lists[key]) + "\n")
    test = base / "codalab_test_set"
    for folder, count in (("queries", 3), ("database", 6)):
        (test / folder).mkdir(parents=True)
        for i in range(count):
            draw(marks_of(i % 8), seed=5000 + 17 * i + count, size=(80, 64)).save(test / folder / f"{i}.png")
    (test / "lists").mkdir()
    (test / "lists" / "test_queries.txt").write_text("".join(f"queries/{i}.png\n" for i in range(3)))
    (test / "lists" / "test_database.txt").write_text("".join(f"database/{i}.png\n" for i in range(6)))
    return str(base)


@pytest.fixture
def fastreid_datasets(root, monkeypatch):
    """FASTREID_DATASETS for our loaders; ``_root`` for the client code, as fast-reid reads it at import."""
    monkeypatch.setenv("FASTREID_DATASETS", root)
    monkeypatch.setattr(sys.modules[__name__], "_root", root)
    return root


MODEL = """MODEL:
  DEVICE: cpu
  BACKBONE: {{NAME: build_resnet_backbone, DEPTH: 18x, FEAT_DIM: 512, NORM: {norm}, LAST_STRIDE: 2,
             PRETRAIN: False}}
"""


def write_config(tmp_path, name, text, norm="BN"):
    path = tmp_path / f"{name}.yml"
    path.write_text(MODEL.format(norm=norm) + text + f"OUTPUT_DIR: {tmp_path / name}\n")
    return str(path)


def setup(args, extend=None):
    """A project's ``setup``: defaults, its config extension, the file, the command line."""
    cfg = get_cfg()
    if extend is not None:
        extend(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def run(trainer_cls, config_file, extend=None, opts=()):
    """A project's ``train_net.py`` main (without ``launch``): train, return the trainer and results."""
    args = default_argument_parser().parse_args(["--config-file", config_file, *opts])
    cfg = setup(args, extend)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer, trainer.train()


# ---- 1. a classification project ------------------------------------------------------------------


@DATASET_REGISTRY.register()
class ShapeClasses(ImageDataset):
    """Folder of drawings with train.csv / val.csv ("file,class"); the val split is the query split."""

    dataset_dir = "shape_classes"

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = os.path.join(self.root, self.dataset_dir)
        train_csv, val_csv = (os.path.join(self.dataset_dir, f) for f in ("train.csv", "val.csv"))
        self.check_before_run([self.dataset_dir, train_csv, val_csv])
        super().__init__(self.process_csv(train_csv), self.process_csv(val_csv), [], **kwargs)

    def process_csv(self, path):
        with open(path, newline="") as f:
            return [(os.path.join(self.dataset_dir, name), label, "0") for name, label in csv.reader(f)]


class ClasDataset(Dataset):
    def __init__(self, img_items, transform=None, idx_to_class=None):
        self.img_items, self.transform = img_items, transform
        if idx_to_class is None:
            classes = sorted({item[1] for item in img_items})
            idx_to_class = dict(enumerate(classes))
        self.idx_to_class = {int(i): c for i, c in idx_to_class.items()}
        self.class_to_idx = {c: i for i, c in self.idx_to_class.items()}

    def __len__(self):
        return len(self.img_items)

    def __getitem__(self, index):
        path, label = self.img_items[index][:2]
        img = read_image(path, "RGB")
        if self.transform is not None:
            img = self.transform(img)
        return {"images": img, "targets": self.class_to_idx[label], "img_paths": path}

    @property
    def num_classes(self):
        return len(self.idx_to_class)


@REID_HEADS_REGISTRY.register()
class ShapeClasHead(EmbeddingHead):
    """Softmax probabilities at test time, the usual training dict otherwise."""

    def forward(self, features, targets=None):
        neck = self.bottleneck(self.pool_layer(features))[..., 0, 0]
        logits = F.linear(neck, self.weight)
        if not self.training:
            return logits.softmax(dim=1)
        return {"cls_outputs": self.cls_layer(logits, targets), "pred_class_logits": logits * self.cls_layer.s,
                "features": neck}


class ClasEvaluator(DatasetEvaluator):
    def __init__(self, cfg, output_dir=None):
        self.cfg, self._output_dir = cfg, output_dir
        self.reset()

    def reset(self):
        self._correct, self._paths = [], []

    def process(self, inputs, outputs):
        self._correct.extend((outputs.argmax(dim=1).cpu() == inputs["targets"]).tolist())
        self._paths.extend(inputs["img_paths"])

    def evaluate(self):
        correct = sum(comm.gather(self._correct), []) if comm.get_world_size() > 1 else self._correct
        acc = 100.0 * sum(correct) / max(len(correct), 1)
        return {"Acc@1": acc, "metric": acc}


class ClasTrainer(DefaultTrainer):
    idx2class = None

    @classmethod
    def build_train_loader(cls, cfg):
        items = []
        for d in cfg.DATASETS.NAMES:
            data = DATASET_REGISTRY.get(d)(root=_root)
            if comm.is_main_process():
                data.show_train()
            items.extend(data.train)
        train_set = ClasDataset(items, build_transforms(cfg, is_train=True))
        cls.idx2class = train_set.idx_to_class
        return build_reid_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        data = DATASET_REGISTRY.get(dataset_name)(root=_root)
        data.show_test()
        test_set = ClasDataset(data.query, build_transforms(cfg, is_train=False), cls.idx2class)
        loader, _ = build_reid_test_loader(cfg, test_set=test_set)
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        return cls.build_test_loader(cfg, dataset_name), ClasEvaluator(cfg, output_dir)

    @staticmethod
    def auto_scale_hyperparams(cfg, num_classes):
        cfg = DefaultTrainer.auto_scale_hyperparams(cfg, num_classes)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            with PathManager.open(os.path.join(cfg.OUTPUT_DIR, "idx2class.json"), "w") as f:
                json.dump(ClasTrainer.idx2class, f)
        return cfg


def test_classification_project_trains_and_evaluates_through_its_evaluator(fastreid_datasets, tmp_path):
    cfg_file = write_config(tmp_path, "clas", """  HEADS: {NAME: ShapeClasHead, WITH_BNNECK: False,
          POOL_LAYER: GlobalAvgPool, CLS_LAYER: Linear}
  LOSSES:
    NAME: ("CrossEntropyLoss",)
    CE: {EPSILON: 0.1}
INPUT: {SIZE_TRAIN: [64, 64], SIZE_TEST: [64, 64], FLIP: {ENABLED: True}}
DATASETS:
  NAMES: ("ShapeClasses",)
  TESTS: ("ShapeClasses",)
DATALOADER: {SAMPLER_TRAIN: TrainingSampler, NUM_WORKERS: 0}
SOLVER: {OPT: SGD, MOMENTUM: 0.9, NESTEROV: True, SCHED: CosineAnnealingLR, BASE_LR: 0.01, IMS_PER_BATCH: 8,
         MAX_EPOCH: 1, WARMUP_ITERS: 0, CHECKPOINT_PERIOD: 1}
TEST: {EVAL_PERIOD: 1, IMS_PER_BATCH: 16}
""")
    trainer, results = run(ClasTrainer, cfg_file)
    assert trainer.cfg.MODEL.HEADS.NUM_CLASSES == 7 and trainer.max_iter == 3  # 28 images, batches of 8
    group = trainer.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["nesterov"] is True
    assert set(results) == {"Acc@1", "metric"} and 0.0 <= results["Acc@1"] <= 100.0
    # fast-reid's --eval-only path of the project: the saved model through the project's evaluator.
    out = trainer.cfg.OUTPUT_DIR
    with PathManager.open(os.path.join(out, "idx2class.json")) as f:
        ClasTrainer.idx2class = json.load(f)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(out, "config.yaml"))
    model = ClasTrainer.build_model(cfg)
    Checkpointer(model).load(os.path.join(out, "model_final.pth"))
    evaluator = ClasEvaluator(cfg)
    again = inference_on_dataset(model, ClasTrainer.build_test_loader(cfg, "ShapeClasses"), evaluator)
    assert again == pytest.approx(results) and len(evaluator._paths) == 14


# ---- 2. an attribute project ---------------------------------------------------------------------


def add_attr_config(cfg):
    cfg.MODEL.LOSSES.BCE = CN({"WEIGHT_ENABLED": True})
    cfg.MODEL.LOSSES.BCE.SCALE = 1.0
    cfg.TEST.THRES = 0.5


@DATASET_REGISTRY.register()
class ShapeAttributes:
    """Multi-label drawings: train.txt / test.txt lines "file a0 a1 a2" (its own base, as attribute sets have)."""

    def __init__(self, root="datasets", combineall=False, **kwargs):
        folder = os.path.join(root, "shape_attrs")
        self.attr_dict = dict(ATTRS)
        self.train, self.test = (self.read(folder, f"{s}.txt") for s in ("train", "test"))
        if combineall:
            self.train = self.train + self.test

    @staticmethod
    def read(folder, name):
        with open(os.path.join(folder, name)) as f:
            return [(os.path.join(folder, p), [float(v) for v in vals]) for p, *vals in map(str.split, f)]

    def show_train(self):
        logger.info("train: %d images, %d attributes", len(self.train), len(self.attr_dict))

    def show_test(self):
        logger.info("test: %d images", len(self.test))


class AttrDataset(Dataset):
    def __init__(self, img_items, transform, attr_dict):
        self.img_items, self.transform, self.attr_dict = img_items, transform, attr_dict

    def __len__(self):
        return len(self.img_items)

    def __getitem__(self, index):
        path, labels = self.img_items[index]
        return {"images": self.transform(read_image(path)), "targets": torch.as_tensor(labels), "img_paths": path}

    @property
    def num_classes(self):
        return len(self.attr_dict)

    @property
    def sample_weights(self):
        return torch.tensor([labels for _, labels in self.img_items]).mean(dim=0)


@REID_HEADS_REGISTRY.register()
class ShapeAttrHead(EmbeddingHead):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.bnneck = nn.BatchNorm1d(cfg.MODEL.HEADS.NUM_CLASSES)
        self.bnneck.apply(weights_init_kaiming)

    def forward(self, features, targets=None):
        neck = self.bottleneck(self.pool_layer(features)).view(features.size(0), -1)
        logits = self.bnneck(F.linear(neck, self.weight))
        return torch.sigmoid(logits) if not self.training else {"cls_outputs": logits}


@META_ARCH_REGISTRY.register()
class ShapeAttrBaseline(Baseline):
    @classmethod
    def from_config(cls, cfg):
        res = Baseline.from_config(cfg)
        res["loss_kwargs"]["bce"] = {"scale": cfg.MODEL.LOSSES.BCE.SCALE}
        return res

    def losses(self, outputs, gt_labels):
        logits, gt = outputs["cls_outputs"], gt_labels.float()
        weight = None
        if self.sample_weights is not None:  # rare attributes weigh more when present
            ratio = self.sample_weights.to(logits.device)
            weight = torch.exp(gt * (1 - ratio) + (1 - gt) * ratio)
        loss = F.binary_cross_entropy_with_logits(logits, gt, weight=weight)
        return {"loss_bce": loss * self.loss_kwargs["bce"]["scale"]}


class AttrEvaluator(DatasetEvaluator):
    def __init__(self, cfg, output_dir=None):
        self.cfg = cfg
        self.reset()

    def reset(self):
        self.probs, self.labels, self.paths = [], [], []

    def process(self, inputs, outputs):
        self.probs.append(outputs.cpu())
        self.labels.append(inputs["targets"].cpu())
        self.paths.extend(inputs["img_paths"])

    def evaluate(self):
        pred = (torch.cat(self.probs) >= self.cfg.TEST.THRES).float()
        gt = torch.cat(self.labels)
        tpr = (pred * gt).sum(0) / gt.sum(0).clamp_min(1)
        tnr = ((1 - pred) * (1 - gt)).sum(0) / (1 - gt).sum(0).clamp_min(1)
        ma = float(((tpr + tnr) / 2).mean()) * 100
        return {"mA": ma, "metric": ma}


class AttrTrainer(DefaultTrainer):
    sample_weights = None

    @classmethod
    def build_model(cls, cfg):
        model = DefaultTrainer.build_model(cfg)
        use = cfg.MODEL.LOSSES.BCE.WEIGHT_ENABLED and AttrTrainer.sample_weights is not None
        model.sample_weights = AttrTrainer.sample_weights.to(model.device) if use else None
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        items, attr_dict = [], None
        for d in cfg.DATASETS.NAMES:
            dataset = DATASET_REGISTRY.get(d)(root=_root, combineall=cfg.DATASETS.COMBINEALL)
            dataset.show_train()
            attr_dict = dataset.attr_dict
            items.extend(dataset.train)
        loader = build_reid_train_loader(cfg, train_set=AttrDataset(items, build_transforms(cfg, True), attr_dict))
        AttrTrainer.sample_weights = loader.dataset.sample_weights
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        dataset = DATASET_REGISTRY.get(dataset_name)(root=_root)
        dataset.show_test()
        test_set = AttrDataset(dataset.test, build_transforms(cfg, is_train=False), dataset.attr_dict)
        return build_reid_test_loader(cfg, test_set=test_set)[0]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return cls.build_test_loader(cfg, dataset_name), AttrEvaluator(cfg, output_folder)


def test_attribute_project_trains_its_losses_and_evaluates_multilabel(fastreid_datasets, tmp_path):
    cfg_file = write_config(tmp_path, "attr", """  META_ARCHITECTURE: ShapeAttrBaseline
  HEADS: {NAME: ShapeAttrHead, WITH_BNNECK: True, NORM: BN, POOL_LAYER: GeneralizedMeanPoolingP}
  LOSSES:
    NAME: ("BinaryCrossEntropyLoss",)
    BCE: {WEIGHT_ENABLED: True, SCALE: 2.0}
INPUT: {SIZE_TRAIN: [64, 64], SIZE_TEST: [64, 64], CJ: {ENABLED: True, PROB: 1.0}}
DATASETS:
  NAMES: ("ShapeAttributes",)
  TESTS: ("ShapeAttributes",)
DATALOADER: {NUM_WORKERS: 0}
SOLVER: {OPT: Adam, BASE_LR: 0.001, IMS_PER_BATCH: 8, MAX_EPOCH: 1, WARMUP_ITERS: 0, CHECKPOINT_PERIOD: 1}
TEST: {EVAL_PERIOD: 1, IMS_PER_BATCH: 4, THRES: 0.4}
""")
    from engine_standins import log_every_iteration

    class Logged(AttrTrainer):
        def __init__(self, cfg):
            super().__init__(cfg)
            log_every_iteration(self)

    trainer, results = run(Logged, cfg_file, extend=add_attr_config)
    model = trainer.module
    assert isinstance(model, ShapeAttrBaseline) and model.heads.weight.requires_grad  # not frozen: no CE here
    assert torch.allclose(model.sample_weights, torch.full((3,), 0.5))  # each mark on half of the 8 kinds
    rows = [json.loads(line) for line in open(os.path.join(trainer.cfg.OUTPUT_DIR, "metrics.json"))]
    assert [r["iteration"] for r in rows if "loss_bce" in r] == [0, 1, 2]
    assert set(results) == {"mA", "metric"} and 0.0 <= results["mA"] <= 100.0
    evaluator = AttrEvaluator(trainer.cfg)
    loader = AttrTrainer.build_test_loader(trainer.cfg, "ShapeAttributes")
    assert inference_on_dataset(model, loader, evaluator) == pytest.approx(results)
    listed = ShapeAttributes(root=fastreid_datasets).test
    assert evaluator.paths == [p for p, _ in listed]  # every test image once, in order, with its labels
    assert torch.equal(torch.cat(evaluator.labels), torch.tensor([labels for _, labels in listed]))


# ---- 3. a distillation project and a retrieval evaluator ------------------------------------------


def add_kd_config(cfg):
    cfg.KD.TEMPERATURE = 4.0


@META_ARCH_REGISTRY.register()
class ShapeDistiller(Baseline):
    """Student Baseline plus frozen teachers (not submodules, so they are never saved or trained)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.model_ts = []
        for config_file, weights in zip(cfg.KD.MODEL_CONFIG, cfg.KD.MODEL_WEIGHTS):
            cfg_t = get_cfg()
            cfg_t.merge_from_file(config_file)
            cfg_t.defrost()
            cfg_t.MODEL.META_ARCHITECTURE = "Baseline"
            model_t = build_model(cfg_t)
            for p in model_t.parameters():
                p.requires_grad_(False)
            Checkpointer(model_t).load(weights)
            self.model_ts.append(model_t)
        self.temperature = cfg.KD.TEMPERATURE

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = batched_inputs["targets"].to(self.device)
        s_outputs = self.heads(self.backbone(images), targets)
        with torch.no_grad():
            t_outputs = [t.heads(t.backbone(images), targets) for t in self.model_ts]
        return self.losses(s_outputs, t_outputs, targets)

    def losses(self, s_outputs, t_outputs, gt_labels):
        loss_dict = super().losses(s_outputs, gt_labels)
        t = self.temperature
        s_logp = F.log_softmax(s_outputs["pred_class_logits"] / t, dim=1)
        kd = sum(F.kl_div(s_logp, F.softmax(o["pred_class_logits"] / t, dim=1), reduction="batchmean")
                 for o in t_outputs)
        loss_dict["loss_kd"] = kd * t * t / len(t_outputs)
        return loss_dict


@DATASET_REGISTRY.register()
class ShapePatents(ImageDataset):
    """The challenge code's shape: lists "<path> <patent>" under train_data/, splits read lazily, training
    ids prefixed with the dataset's name, query camera 1 and database camera -1."""

    _junk_pids = [0, -1]
    dataset_dir = "train_data"
    dataset_name = "shape_patents"

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = os.path.join(self.root, self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, "patent_data")
        train_path, query_path, db_path = (os.path.join(self.dataset_dir, f) for f in (
            "train_patent_trn.txt", "val_query_patent.txt", "val_db_patent.txt"))
        train = lambda: self.process_dir(self.image_dir, train_path, is_train=True)  # noqa: E731
        query = lambda: self.process_dir(self.image_dir, query_path, is_query=True)  # noqa: E731
        gallery = lambda: self.process_dir(self.image_dir, db_path)  # noqa: E731
        super().__init__(train, query, gallery, **kwargs)

    def process_dir(self, dir_path, path_file, is_train=False, is_query=False):
        data = []
        with open(path_file) as f:
            for line in f:
                img_path, pid = line.strip().split(" ")
                if is_train:
                    data.append((os.path.join(dir_path, img_path), f"{self.dataset_name}_{pid}", 1))
                else:
                    data.append((os.path.join(dir_path, img_path), int(pid), 1 if is_query else -1))
        return data


@DATASET_REGISTRY.register()
class ShapePatentsFew(ShapePatents):
    """Takes an argument of its own, which a project passes through the loader builder (as NAIC20 does)."""

    def __init__(self, root="datasets", max_ids=None, **kwargs):
        self.max_ids = max_ids
        super().__init__(root, **kwargs)

    def process_dir(self, dir_path, path_file, is_train=False, is_query=False):
        data = super().process_dir(dir_path, path_file, is_train, is_query)
        keep = sorted({pid for _, pid, _ in data})[:self.max_ids] if is_train else None
        return [item for item in data if keep is None or item[1] in keep]


@DATASET_REGISTRY.register()
class ShapePatentsTest(ImageDataset):
    """The challenge code's test-set shape: path-only lists, every image id 0."""

    dataset_test_dir = "codalab_test_set"

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.test_dir = os.path.join(self.root, self.dataset_test_dir)
        query = lambda: self.process_test_dir(os.path.join(self.test_dir, "lists/test_queries.txt"), 1)  # noqa
        gallery = lambda: self.process_test_dir(os.path.join(self.test_dir, "lists/test_database.txt"), -1)  # noqa
        super().__init__([], query, gallery, **kwargs)

    def process_test_dir(self, path_file, camid):
        with open(path_file) as f:
            return [(os.path.join(self.test_dir, line.strip()), 0, camid) for line in f if line.strip()]


class RetrievalEvaluator(DatasetEvaluator):
    """fast-reid's evaluator recipe: features, optional query expansion, a dense distance, evaluate_rank."""

    def __init__(self, cfg, num_query, output_dir=None):
        self.cfg, self.num_query = cfg, num_query
        self.reset()

    def reset(self):
        self.features, self.pids, self.camids = [], [], []

    def process(self, inputs, outputs):
        self.pids.extend(inputs["targets"].tolist())
        self.camids.extend(inputs["camids"].tolist())
        self.features.append(outputs.cpu())

    def evaluate(self):
        feats, nq = torch.cat(self.features), self.num_query
        qf, gf = F.normalize(feats[:nq]), F.normalize(feats[nq:])
        if self.cfg.TEST.AQE.ENABLED:
            a = self.cfg.TEST.AQE
            qf, gf = aqe(qf, gf, a.QE_TIME, a.QE_K, a.ALPHA)
        dist = build_dist(qf, gf, self.cfg.TEST.METRIC)
        pids, cams = np.asarray(self.pids), np.asarray(self.camids)
        cmc, all_ap, _ = evaluate_rank(dist, pids[:nq], pids[nq:], cams[:nq], cams[nq:])
        return {"Rank-1": cmc[0] * 100, "mAP": float(np.mean(all_ap)) * 100, "metric": cmc[0] * 100}


class RetrievalTrainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = build_reid_test_loader(cfg, dataset_name=dataset_name)
        return data_loader, RetrievalEvaluator(cfg, num_query, output_dir)


RETRIEVAL = """  HEADS: {{POOL_LAYER: GeneralizedMeanPoolingP, NECK_FEAT: after, CLS_LAYER: CircleSoftmax, SCALE: 16,
          MARGIN: 0.25}}
  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss")
INPUT: {{SIZE_TRAIN: [72,], SIZE_TEST: [72,], CROP: {{ENABLED: True, SIZE: [64,], SCALE: [0.5, 1]}},
        FLIP: {{ENABLED: True}}, REA: {{ENABLED: True}}}}
DATASETS:
  NAMES: ("ShapePatents",)
  TESTS: {tests}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 4, NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 16, MAX_EPOCH: 1, BASE_LR: 0.0005, WARMUP_ITERS: 0, CHECKPOINT_PERIOD: 1}}
TEST: {{EVAL_PERIOD: 1, IMS_PER_BATCH: 8, AQE: {{ENABLED: True, QE_K: 2}}}}
{extra}"""


@pytest.fixture(scope="module")
def patents_run(root, tmp_path_factory):
    """The challenge-shaped classes trained once by fast-reid's train_net main (also the distillation's teacher)."""
    out = tmp_path_factory.mktemp("patents")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTREID_DATASETS", root)
        cfg_file = write_config(out, "patents", RETRIEVAL.format(
            tests='("ShapePatents", "ShapePatentsTest")', extra=""), norm="syncBN")
        return run(DefaultTrainer, cfg_file)


def test_challenge_dataset_classes_train_with_one_value_size_and_crop(fastreid_datasets, patents_run):
    """Patent/PatentTest-shaped classes registered under other names train unchanged; fast-reid's one-value
    INPUT.SIZE_* with INPUT.CROP on 80 x 64 drawings; the unlabeled test set writes result.npy."""
    trainer, results = patents_run
    assert trainer.cfg.MODEL.HEADS.NUM_CLASSES == 8 and trainer.max_iter == 2  # 32 images, batches of 16
    assert set(results["ShapePatents"]) >= {"mAP", "Rank-1"} and 0 <= results["ShapePatents"]["mAP"] <= 100
    assert results["ShapePatentsTest"] == {}
    result = np.load(os.path.join(trainer.cfg.OUTPUT_DIR, "result.npy"))
    assert result.shape == (3, 6)
    images = next(iter(build_reid_train_loader(trainer.cfg)))["images"]
    assert images.shape == (16, 3, 64, 64)  # shorter side 72, then a 64 x 64 random resized crop
    loader, num_query = build_reid_test_loader(trainer.cfg, "ShapePatents")
    assert num_query == 4 and next(iter(loader))["images"].shape[-2:] == (64, 64)
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.DATASETS.NAMES = ("ShapePatentsFew",)
    assert build_reid_train_loader(cfg, max_ids=5).dataset.num_classes == 5


def test_distillation_project_with_frozen_teacher_and_own_evaluator(fastreid_datasets, patents_run, tmp_path):
    out_t = patents_run[0].cfg.OUTPUT_DIR  # the teacher
    kd = (f"KD: {{MODEL_CONFIG: [{out_t}/config.yaml], MODEL_WEIGHTS: [{out_t}/model_final.pth], "
          f"TEMPERATURE: 2.0}}\n")
    student_file = write_config(tmp_path, "student", "  META_ARCHITECTURE: ShapeDistiller\n" + RETRIEVAL.format(
        tests='("ShapePatents",)', extra=kd))
    trainer, results = run(RetrievalTrainer, student_file, extend=add_kd_config)
    student = trainer.module
    t_model = student.model_ts[0]
    saved = torch.load(os.path.join(out_t, "model_final.pth"), weights_only=True)["model"]
    assert all(torch.equal(p, saved[n]) for n, p in t_model.named_parameters())  # teacher loaded and untouched
    assert not any(k.startswith("model_ts") for k in student.state_dict())
    assert set(results) == {"Rank-1", "mAP", "metric"} and 0 <= results["mAP"] <= 100
    # The project's evaluator (dense build_dist + evaluate_rank) agrees with ours on the same features.
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.TEST.AQE.ENABLED = False
    cfg.TEST.AQE.AUTO = False
    loader, num_query = build_reid_test_loader(cfg, "ShapePatents")
    theirs = inference_on_dataset(student, loader, RetrievalEvaluator(cfg, num_query))
    ours = inference_on_dataset(student, loader, ReidEvaluator(cfg, num_query, str(tmp_path / "eval")))
    assert theirs["mAP"] == pytest.approx(ours["mAP"], abs=1e-3)
    assert theirs["Rank-1"] == pytest.approx(ours["Rank-1"], abs=1e-3)
    # fast-reid's own Distiller, from the config alone, with the same teacher and a moving average of itself.
    cfg = get_cfg()
    add_kd_config(cfg)
    cfg.merge_from_file(student_file)
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "Distiller", "MODEL.HEADS.NUM_CLASSES", "8",
                         "KD.EMA.ENABLED", "True", "KD.EMA.MOMENTUM", "0.5"])
    distiller = build_model(cfg)
    assert len(distiller.model_ts) == 2 and not any(k.startswith("model_ts") for k in distiller.state_dict())
    batch = next(iter(build_reid_train_loader(cfg)))
    before = next(distiller.model_ts[0].parameters()).clone()
    with torch.no_grad():
        next(distiller.parameters()).add_(1.0)  # the student moves away from its average by 1
    losses = distiller(batch)
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_jsdiv"}
    grad = torch.autograd.grad(losses["loss_jsdiv"], distiller.heads.weight)[0]
    assert grad.abs().sum() > 0  # the divergence trains the student's classifier
    assert torch.allclose(next(distiller.model_ts[0].parameters()), before + 0.5)  # halfway (momentum 0.5)
    assert all(torch.equal(p, saved[n]) for n, p in distiller.model_ts[1].named_parameters())


# ---- fast-reid's config values: implemented, or refused by the preflight naming the key -------------

VALUES = """MODEL:
  DEVICE: cpu
  BACKBONE: {{DEPTH: 18x, FEAT_DIM: 512, NORM: {norm}, PRETRAIN: False}}
  HEADS: {{NORM: {head_norm}}}
  LOSSES:
    NAME: {losses}
INPUT:
  SIZE_TRAIN: [72,]
  SIZE_TEST: [72,]
  CROP: {{ENABLED: True, SIZE: [64,], SCALE: [0.16, 1], RATIO: [0.75, 1.33]}}
  CJ: {{ENABLED: True, PROB: 0.5, BRIGHTNESS: 0.15, CONTRAST: 0.15, SATURATION: 0.1, HUE: 0.1}}
{extra_input}DATASETS:
  NAMES: ("ShapePatents",)
  TESTS: ("ShapePatents",)
DATALOADER: {{SAMPLER_TRAIN: {sampler}}}
SOLVER: {{OPT: {opt}, MOMENTUM: 0.9, NESTEROV: True, SCHED: {sched}}}
OUTPUT_DIR: {out}
"""


def _preflight_errors(tmp_path, **values):
    from fastreid.engine.preflight import preflight

    fields = dict(norm="BN", head_norm="BN", losses='("CrossEntropyLoss",)', extra_input="",
                  sampler="TrainingSampler", opt="SGD", sched="MultiStepLR", out=tmp_path / "out")
    fields.update(values)
    path = tmp_path / "values.yml"
    path.write_text(VALUES.format(**fields))
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.freeze()
    return preflight(cfg, train=True).errors, str(path)


@pytest.mark.parametrize("values", [
    dict(norm="FrozenBN", head_norm="syncBN", sampler="BalancedIdentitySampler", sched="CosineAnnealingLR"),
    dict(norm="GhostBN", head_norm="GhostBN", sampler="BalancedIdentitySampler"),
    dict(norm="syncBN", head_norm="FrozenBN", sampler="NaiveIdentitySampler", opt="Adam",
         losses='("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")'),
])
def test_fastreid_values_that_are_implemented_pass_the_preflight(fastreid_datasets, tmp_path, values):
    errors, _ = _preflight_errors(tmp_path, **values)
    assert errors == []


def test_fastreid_values_not_implemented_are_refused_naming_the_key(fastreid_datasets, tmp_path):
    errors, path = _preflight_errors(tmp_path, norm="GN", head_norm="GN", sampler="SetReWeightSampler",
                                     opt="RMSprop", losses='("CrossEntropyLoss", "FocalLoss")',
                                     extra_input="  AUGMIX: {ENABLED: True}\n  RPT: {ENABLED: True}\n")
    text = "\n".join(errors)
    for expected in ("MODEL.BACKBONE.NORM is 'GN'", "MODEL.HEADS.NORM is 'GN'",
                     "DATALOADER.SAMPLER_TRAIN is 'SetReWeightSampler'", "SOLVER.OPT 'RMSprop'",
                     "MODEL.LOSSES.NAME entry is 'FocalLoss'", f"INPUT.AUGMIX.ENABLED = True ({path}:",
                     f"INPUT.RPT.ENABLED = True ({path}:"):
        assert expected in text, text
    errors, _ = _preflight_errors(tmp_path, sampler="ImbalancedDatasetSampler")
    assert len(errors) == 1 and "DATALOADER.SAMPLER_TRAIN is 'ImbalancedDatasetSampler'" in errors[0]


def test_distiller_teachers_are_checked_by_the_preflight(fastreid_datasets, tmp_path):
    from fastreid.engine.preflight import preflight

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.META_ARCHITECTURE", "Distiller", "DATASETS.NAMES",
                         '("ShapePatents",)', "DATASETS.TESTS", "()", "KD.MODEL_CONFIG", f'("{tmp_path}/t.yaml",)',
                         "OUTPUT_DIR", str(tmp_path / "out")])
    errors = "\n".join(preflight(cfg, train=True).errors)
    assert f"KD.MODEL_CONFIG entry {tmp_path}/t.yaml not found" in errors
    assert "KD.MODEL_CONFIG has 1 entries but KD.MODEL_WEIGHTS has 0" in errors

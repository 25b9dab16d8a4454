"""configs/small: the two-stage recipe for small real collections trains end to end at tiny scale,
on object-patent sheets drawn large (a catalogue written by the test), and then scores the
challenge-style test split with the expansion chosen on validation."""
import json
import os
import subprocess
import sys

import numpy as np

from fastreid.config import get_cfg
from fastreid.data.synthetic.generator import load_test_ground_truth
from fastreid.data.synthetic.object_patents import ObjectPatentSpec, generate_objects
from fastreid.evaluation import score_submission
from test_object_patents import box_obj, cylinder_obj, write_catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = os.path.join(ROOT, "configs", "small")


def test_small_configs_are_the_measured_recipe():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(SMALL, "small_R18-ibn_128.yml"))
    assert list(cfg.INPUT.SIZE_TRAIN) == [128, 128] and cfg.INPUT.RESIZE_MODE == "bicubic"
    assert cfg.TEST.FLIP.ENABLED and cfg.TEST.AQE.AUTO and cfg.MODEL.BACKBONE.DEPTH == "18x"
    stages = get_cfg()
    stages.merge_from_file(os.path.join(SMALL, "small_R18-ibn_2stage.yml"))
    assert list(stages.STAGES) == ["small_R18-ibn_64.yml", "small_R18-ibn_128.yml"]


def test_small_two_stage_trains_and_scores_the_test_split(tmp_path):
    catalog = str(tmp_path / "objects.sh3f")
    write_catalog(catalog, [(f"m{i}", ("Kitchen", "Office")[i % 2],
                             box_obj((1 + 0.4 * i, 1.0, 0.6 + 0.1 * i)) if i % 2 else cylinder_obj(20 + 2 * i))
                            for i in range(10)])
    data = str(tmp_path / "data")
    generate_objects(data, ObjectPatentSpec(catalogs=(catalog,), image_size=96, seed=0), workers=1)
    out = str(tmp_path / "run")
    tiny = ["DATASETS.ROOT", data, "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_WORKERS",
            "0", "TEST.IMS_PER_BATCH", "16"]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
                        os.path.join(SMALL, "small_R18-ibn_2stage.yml"), *tiny, "OUTPUT_DIR", out],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    stage2 = os.path.join(out, "stage2_small_R18-ibn_128")
    assert os.path.isfile(os.path.join(out, "stage1_small_R18-ibn_64", "model_final.pth"))
    weights = os.path.join(stage2, "model_best.pth")
    choice = json.load(open(os.path.join(stage2, "qe_choice.json")))
    assert "candidates" in choice
    test_out = str(tmp_path / "test")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "test.py"), "--config-file",
                        os.path.join(SMALL, "small_R18-ibn_128.yml"), "--eval-only", *tiny, "MODEL.WEIGHTS", weights,
                        "DATASETS.TESTS", '("DeepPatentTest",)', "TEST.AQE.AUTO_FILE",
                        os.path.join(stage2, "qe_choice.json"), "OUTPUT_DIR", test_out],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    result = np.load(os.path.join(test_out, "result.npy"))
    q, db = load_test_ground_truth(data)
    assert result.shape == (len(q), min(10, len(db)))
    scores = score_submission(result, q, db)
    assert 0.0 <= scores["mAP@10"] <= 100.0

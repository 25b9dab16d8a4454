"""tools/demo.py end to end on a tiny synthetic set and a few iterations (the real demo takes minutes)."""
import importlib.util
import json
import os

import numpy as np

from fastreid.data.synthetic import SyntheticSpec, generate, load_test_ground_truth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_both_stages_and_reports_against_pixels(tmp_path, capsys):
    data, out = str(tmp_path / "data"), str(tmp_path / "demo")
    generate(data, SyntheticSpec(num_patents=16, image_size=32, seed=1, min_views=3, max_views=4), workers=1)
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(["--data", data, "--output", out, "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "8",
                      "INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]", "DATALOADER.NUM_WORKERS", "0",
                      "TEST.EVAL_PERIOD", "0"]) == 0
    printed = capsys.readouterr().out
    assert "raw pixels (32x32, cosine)" in printed and "ResNet18-IBN demo (32x32)" in printed
    assert os.path.isfile(os.path.join(out, "stage1_demo_R18-ibn_64", "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "stage2_demo_R18-ibn_96", "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "final", "vis", "index.html"))
    q, db = load_test_ground_truth(data)
    for sub in ("final", "pixel_baseline"):
        assert np.load(os.path.join(out, sub, "result.npy")).shape == (len(q), min(10, len(db)))
    summary = json.load(open(os.path.join(out, "demo_results.json")))
    assert summary["weights"].endswith(os.path.join("stage2_demo_R18-ibn_96", "model_best.pth"))
    assert set(summary["test_result_npy"]) == {"trained", "pixels"}
    for scores in summary["test_result_npy"].values():
        assert 0.0 <= scores["mAP@10"] <= 100.0
    # The shipped demo chooses query expansion on validation: both numbers, never below no expansion.
    assert "val mAP@10 no QE" in printed and "QE (k, alpha)" in printed
    for name in ("trained", "pixels"):
        val = summary["validation"][name]
        assert val["mAP@10"] >= val["noQE-mAP@10"]
    assert os.path.isfile(os.path.join(out, "final", "qe_choice.json"))


def test_demo_table_names_the_expansion_whether_chosen_fixed_or_off():
    from fastreid.config import get_cfg

    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    cfg = get_cfg()
    chosen = {"mAP@10": 13.5, "noQE-mAP@10": 12.9, "QE_K": 2.0, "QE_ALPHA": 2.0}
    assert demo.qe_cells(cfg, chosen) == [12.9, "2, 2"]
    assert demo.qe_cells(cfg, dict(chosen, **{"mAP@10": 12.9, "QE_K": 0.0, "QE_ALPHA": 0.0})) == [12.9, "none"]
    assert demo.qe_cells(cfg, {"mAP@10": 11.0}) == [11.0, "none"]
    cfg.TEST.AQE.ENABLED, cfg.TEST.AQE.QE_K, cfg.TEST.AQE.ALPHA = True, 5, 2.0
    assert demo.qe_cells(cfg, {"mAP@10": 11.0}) == ["", "5, 2 (fixed)"]

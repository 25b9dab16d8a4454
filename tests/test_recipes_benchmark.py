"""benchmarks/recipes.py: the original recipe's schedule scaled to the budget, and a tiny real run
that trains each named recipe on the held-out-family set and prints one row per recipe."""
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("recipes", os.path.join(ROOT, "benchmarks", "recipes.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_original_schedule_keeps_its_shares_of_the_run():
    opts = _load().scaled_original(epochs=7, iters_per_epoch=40)
    values = dict(zip(opts[::2], opts[1::2]))
    # STEPS [25, 35] of 70 epochs -> 7 epochs: [2.5, 3.5] rounded half to even; DELAY_EPOCHS 30 -> 3.
    assert values["SOLVER.STEPS"] == "[2, 4]" and values["SOLVER.DELAY_EPOCHS"] == "3"
    # 280 of the original's 70 x 1990 iterations: warmup 3000 -> 6.03, freeze 1000 -> 2.01.
    assert values["SOLVER.WARMUP_ITERS"] == "6" and values["SOLVER.FREEZE_ITERS"] == "2"
    assert values["MODEL.BACKBONE.DEPTH"] == "18x"


def test_tiny_run_trains_every_recipe_and_prints_the_table(tmp_path, capsys):
    bench = _load()
    assert bench.main(["--tiny", "--work", str(tmp_path), "--recipes", "original", "demo+rot90", "pretrained"]) == 0
    out = capsys.readouterr().out.split("Hard synthetic set")[-1]  # the training logs print tables too
    rows = [ln.split("|")[1].strip() for ln in out.splitlines() if ln.startswith("| ")]
    assert rows == ["recipe", "original", "original + AQE k5 a2", "demo+rot90", "pretrained"]
    runs = [d for d in os.listdir(tmp_path) if d.startswith("runs-")]
    result = json.load(open(tmp_path / runs[0] / "recipes.json"))
    rot = result["results"]["demo+rot90"][0]
    assert 0 <= rot["mAP@10"] <= 100 and rot["seconds"] > 0
    cfg = open(tmp_path / runs[0] / "demo+rot90-seed0" / "config.yaml").read()
    assert "ROT90_PROB: 0.5" in cfg and "LINE_PROB: 0.0" in cfg
    info = json.load(open(tmp_path / "hard-40-32px" / "synthetic_info.json"))
    assert info["spec"]["holdout_kinds"] == ["cylinder", "hexagon"]
    pretrained = open(tmp_path / runs[0] / "pretrained-seed0" / "config.yaml").read()
    assert f"PRETRAIN_PATH: {tmp_path / 'pretrain-40-32px-1ep' / 'model_final.pth'}" in pretrained
    info = json.load(open(tmp_path / "pretrain-data-40-32px" / "synthetic_info.json"))
    assert not set(info["spec"]["base_kinds"]) & {"cylinder", "hexagon"}

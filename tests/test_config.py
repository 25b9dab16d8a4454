"""Config system: _BASE_ chains, overrides, error messages, round trip through config.yaml."""
import os
import textwrap

import pytest

from fastreid.config import ConfigError, get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def chain(tmp_path):
    """Three files: sub/c.yml -> ../b.yml -> base/a.yml (each _BASE_ relative to its own file)."""
    _write(tmp_path / "base" / "a.yml", """
        MODEL:
          BACKBONE:
            DEPTH: 18x
            WITH_IBN: True
          HEADS:
            SCALE: 16
        INPUT:
          SIZE_TRAIN: [64, 32]
        SOLVER:
          STEPS: [10, 20, 30]
        """)
    _write(tmp_path / "b.yml", """
        _BASE_: base/a.yml
        MODEL:
          BACKBONE:
            DEPTH: 50x
        SOLVER:
          STEPS: [5]
        """)
    return _write(tmp_path / "sub" / "c.yml", """
        _BASE_: ../b.yml
        MODEL:
          HEADS:
            MARGIN: 0.5
        OUTPUT_DIR: out/here
        """)


def test_base_chain_merges_dicts_and_replaces_values(chain):
    cfg = get_cfg()
    cfg.merge_from_file(chain)
    assert cfg.MODEL.BACKBONE.DEPTH == "50x"  # b overrides a
    assert cfg.MODEL.BACKBONE.WITH_IBN is True  # kept from a: dicts merge key by key
    assert cfg.MODEL.HEADS.SCALE == 16.0 and isinstance(cfg.MODEL.HEADS.SCALE, float)
    assert cfg.MODEL.HEADS.MARGIN == 0.5
    assert cfg.INPUT.SIZE_TRAIN == [64, 32]
    assert cfg.SOLVER.STEPS == [5]  # lists replace, never merge
    assert cfg.OUTPUT_DIR == "out/here"
    assert cfg.MODEL.BACKBONE.LAST_STRIDE == get_cfg().MODEL.BACKBONE.LAST_STRIDE


def test_command_line_overrides_with_lists_and_tuples(chain):
    cfg = get_cfg()
    cfg.merge_from_file(chain)
    cfg.merge_from_list([
        "INPUT.SIZE_TRAIN", "[128, 128]",
        "MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TripletLoss")',
        "SOLVER.BASE_LR", "1e-3",
        "MODEL.HEADS.SCALE", "64",
        "INPUT.FLIP.ENABLED", "True",
        "MODEL.FREEZE_LAYERS", "[backbone]",
        "OUTPUT_DIR", "logs/x",
    ])
    assert cfg.INPUT.SIZE_TRAIN == [128, 128]
    assert cfg.MODEL.LOSSES.NAME == ("CrossEntropyLoss", "TripletLoss")
    assert cfg.SOLVER.BASE_LR == pytest.approx(1e-3)
    assert cfg.MODEL.HEADS.SCALE == 64.0
    assert cfg.INPUT.FLIP.ENABLED is True
    assert cfg.MODEL.FREEZE_LAYERS == ["backbone"]
    assert cfg.OUTPUT_DIR == "logs/x"


def test_unknown_key_on_command_line_names_key_and_suggests():
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_list(["MODEL.BACKBONE.DEPHT", "50x"])
    msg = str(e.value)
    assert "MODEL.BACKBONE.DEPHT" in msg and "command line" in msg
    assert "MODEL.BACKBONE.DEPTH" in msg


def test_unknown_key_in_file_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.yml", """
        MODEL:
          HEADS:
            NECK_FEET: after
        """)
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(path)
    msg = str(e.value)
    assert "MODEL.HEADS.NECK_FEET" in msg
    assert f"{path}:4" in msg
    assert "MODEL.HEADS.NECK_FEAT" in msg


def test_unknown_key_in_base_file_names_the_base_file(tmp_path):
    base = _write(tmp_path / "base.yml", "SOLVER:\n  LEARNING_RATE: 0.1\n")
    child = _write(tmp_path / "child.yml", "_BASE_: base.yml\nSOLVER:\n  BASE_LR: 0.1\n")
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(child)
    assert "SOLVER.LEARNING_RATE" in str(e.value) and base in str(e.value)


@pytest.mark.parametrize("key,value,expected,given", [
    ("SOLVER.BASE_LR", "fast", "float", "str"),
    ("SOLVER.IMS_PER_BATCH", "3.5", "int", "float"),
    ("INPUT.FLIP.ENABLED", "1", "bool", "int"),
    ("INPUT.SIZE_TRAIN", "256", "list", "int"),
    ("MODEL.BACKBONE.DEPTH", "[50]", "str", "list"),
])
def test_wrong_type_names_key_expected_and_given(key, value, expected, given):
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_list([key, value])
    msg = str(e.value)
    assert key in msg and f"expects {expected}" in msg and f"got {given}" in msg


def test_group_key_needs_mapping(tmp_path):
    path = _write(tmp_path / "g.yml", "MODEL:\n  BACKBONE: resnet\n")
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.*group"):
        get_cfg().merge_from_file(path)


def test_odd_number_of_overrides_is_an_error():
    with pytest.raises(ConfigError, match="KEY VALUE"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])


def test_missing_base_and_cycle_are_errors(tmp_path):
    path = _write(tmp_path / "a.yml", "_BASE_: nowhere.yml\n")
    with pytest.raises(ConfigError, match="nowhere.yml"):
        get_cfg().merge_from_file(path)
    _write(tmp_path / "x.yml", "_BASE_: y.yml\n")
    _write(tmp_path / "y.yml", "_BASE_: x.yml\n")
    with pytest.raises(ConfigError, match="Circular"):
        get_cfg().merge_from_file(str(tmp_path / "x.yml"))


def test_dumped_config_reproduces_the_run(tmp_path, chain):
    cfg = get_cfg()
    cfg.merge_from_file(chain)
    cfg.merge_from_list(["MODEL.LOSSES.NAME", '("TripletLoss",)', "INPUT.SIZE_TEST", "[96, 96]"])
    out = tmp_path / "config.yaml"
    out.write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(out))
    assert again == cfg


def test_get_cfg_returns_independent_copies():
    a = get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert get_cfg().SOLVER.BASE_LR != 123.0


def test_reference_recipe_256():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "patent", "sbs_R101-ibn_patent_256.yml"))
    m = cfg.MODEL
    assert m.BACKBONE.DEPTH == "101x" and m.BACKBONE.WITH_IBN and m.BACKBONE.WITH_NL
    assert m.BACKBONE.LAST_STRIDE == 1 and m.BACKBONE.NL_WIDTH == 1
    assert m.HEADS.POOL_LAYER == "GeneralizedMeanPoolingP" and m.HEADS.NECK_FEAT == "after"
    assert (m.HEADS.CLS_LAYER, m.HEADS.SCALE, m.HEADS.MARGIN) == ("CircleSoftmax", 64.0, 0.35)
    assert m.LOSSES.NAME == ("CrossEntropyLoss", "TripletLoss")
    assert m.LOSSES.CE.EPSILON == 0.1
    assert m.LOSSES.TRI.MARGIN == 0.0 and m.LOSSES.TRI.HARD_MINING
    assert cfg.INPUT.AUTOAUG.ENABLED and cfg.INPUT.AUTOAUG.PROB == 0.1
    assert cfg.INPUT.REA.ENABLED and cfg.INPUT.REA.PROB == 0.5
    assert cfg.INPUT.FLIP.ENABLED and cfg.INPUT.PADDING.ENABLED and cfg.INPUT.PADDING.SIZE == 10
    assert cfg.INPUT.SIZE_TRAIN == [256, 256] and cfg.INPUT.SIZE_TEST == [256, 256]
    assert cfg.DATALOADER.SAMPLER_TRAIN == "BalancedIdentitySampler" and cfg.DATALOADER.NUM_INSTANCE == 16
    s = cfg.SOLVER
    assert (s.OPT, s.BASE_LR, s.IMS_PER_BATCH, s.MAX_EPOCH) == ("Adam", 3.5e-4, 128, 70)
    assert (s.WEIGHT_DECAY, s.WARMUP_FACTOR, s.WARMUP_ITERS) == (5e-4, 0.1, 3000)
    assert (s.SCHED, s.DELAY_EPOCHS, s.FREEZE_ITERS) == ("CosineAnnealingLR", 30, 1000)
    assert s.AMP.ENABLED and m.FREEZE_LAYERS == ["backbone"]


def test_reference_recipe_384_and_test():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "patent", "sbs_R101-ibn_patent_384.yml"))
    assert cfg.INPUT.SIZE_TRAIN == [384, 384]
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_EPOCH) == (3.5e-5, 64, 90)
    assert cfg.MODEL.WEIGHTS.endswith("model_best.pth")
    test = get_cfg()
    test.merge_from_file(os.path.join(REPO, "configs", "patent", "sbs_R101-ibn_patent_test.yml"))
    assert test.INPUT.SIZE_TEST == [384, 384] and test.TEST.IMS_PER_BATCH == 32
    aqe = test.TEST.AQE
    assert (aqe.ENABLED, aqe.QE_K, aqe.ALPHA, aqe.QE_TIME, aqe.MODE) == (True, 5, 2.0, 1, "all")
    assert test.TEST.METRIC == "cosine" and test.DATASETS.TESTS == ("DeepPatentTest",)


def test_every_shipped_config_loads():
    for folder, _, files in os.walk(os.path.join(REPO, "configs")):
        for name in files:
            if name.endswith((".yml", ".yaml")):
                get_cfg().merge_from_file(os.path.join(folder, name))

"""benchmarks/train_throughput.py runs its variants on a tiny config and prints the table."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("train_throughput", os.path.join(ROOT, "benchmarks",
                                                                                     "train_throughput.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_throughput_table_has_one_row_per_variant(tmp_path, capsys):
    cfg = tmp_path / "tiny.yml"
    cfg.write_text("MODEL:\n  DEVICE: cpu\n  BACKBONE: {DEPTH: 18x, FEAT_DIM: 512}\n"
                   "INPUT: {SIZE_TRAIN: [32, 32]}\nSOLVER: {IMS_PER_BATCH: 4}\nDATALOADER: {NUM_INSTANCE: 2}\n")
    bench = _load()
    assert bench.main(["--config-file", str(cfg), "--iters", "1", "--warmup", "1",
                       "--variants", "baseline", "amp", "channels_last"]) == 0
    out = capsys.readouterr().out
    table = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + 3  # header + one row per variant
    assert "amp=bfloat16" in out  # fp16 requested on CPU falls back to bf16
    for row in table[1:]:
        speed = row.split("|")[3].strip()
        assert float(speed) > 0

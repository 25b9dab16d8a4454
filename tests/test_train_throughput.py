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


def test_loader_rows_time_png_and_prepared_copy(tmp_path, capsys):
    cfg = tmp_path / "tiny.yml"
    cfg.write_text("MODEL:\n  DEVICE: cpu\n  BACKBONE: {DEPTH: 18x, FEAT_DIM: 512}\n"
                   "INPUT: {SIZE_TRAIN: [32, 32]}\nSOLVER: {IMS_PER_BATCH: 4}\n"
                   "DATALOADER: {NUM_INSTANCE: 2, NUM_WORKERS: 0, SAMPLER_TRAIN: NaiveIdentitySampler}\n")
    out = tmp_path / "table.md"
    bench = _load()
    assert bench.main(["--config-file", str(cfg), "--iters", "1", "--warmup", "1", "--variants", "baseline",
                       "--loader", "--loader-data", str(tmp_path / "data"), "--loader-image-size", "64",
                       "--loader-patents", "8", "--loader-batches", "2", "--output", str(out)]) == 0
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| ")]
    names = [r.split("|")[1].strip() for r in rows[1:]]
    assert names == ["baseline", "loader only (PNG 64 px)", "loader only (prepared 32x32 copy)",
                     "baseline + loader (prepared copy)"]
    assert all(float(r.split("|")[3]) > 0 for r in rows[1:])
    assert (tmp_path / "data" / "prepared" / "32x32" / "prepared.json").is_file()

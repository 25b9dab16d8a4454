"""The scale benchmark's two pipelines agree on small inputs and report what its tables print."""
import argparse
import importlib.util
import os

import numpy as np
import torch

from fastreid.evaluation.query_expansion import aqe
from fastreid.evaluation.search import normalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("eval_scale", os.path.join(REPO, "benchmarks", "eval_scale.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_loop_equals_ours_and_stages_report_time_and_memory():
    bench = _load_benchmark()
    q, g, q_pids, g_pids = bench.make_inputs(30, 90, 16)
    assert q.shape == (30, 16) and g.shape == (90, 16) and np.isin(q_pids, g_pids).all()
    feats = torch.cat([q, g])
    ref = bench._reference_qe_rows(feats.numpy(), normalize(feats), len(feats), 5, 2.0)
    ours_q, ours_g = aqe(q, g, 1, 5, 2.0)
    np.testing.assert_allclose(torch.cat([ours_q, ours_g]).numpy(), ref, rtol=1e-5, atol=1e-6)
    args = argparse.Namespace(queries=30, database=90, dim=16, qe_k=5, alpha=2.0, backend="torch", ref_rows=10,
                              million_size=400, million_queries=20, million_dim=8, million_ref_rows=5, nlist=4,
                              nprobe=4)
    ours, reference = bench.run_ours(args), bench.run_reference(args)
    assert ours["time"] > 0 and ours["peak"] >= ours["inputs"] > 0 and 0 <= ours["mAP"] <= 100
    assert reference["extrapolated"] and reference["peak"] == 4.0 * 120 ** 2 + 4.0 * 2 * 120 * 16 + 16 * 30 * 90
    big = bench.run_million_ours(args)
    assert [nprobe for nprobe, _, _ in big["ivf"]] == [4, 16]
    assert big["ivf"][0][2] == 1.0  # 4 lists probed out of 4: the IVF search is exact

"""The scale benchmark's two pipelines agree on small inputs and report what its tables print."""
import argparse
import importlib
import os
import sys

import numpy as np
import pytest
import torch

from fastreid.evaluation.query_expansion import aqe
from fastreid.evaluation.search import normalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_benchmark():
    # Imported by name, not from a file spec: its processes are spawned and import it again.
    if os.path.join(REPO, "benchmarks") not in sys.path:
        sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    return importlib.import_module("eval_scale")


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
                              nprobe=4, processes=2)
    ours, reference = bench.run_ours(args), bench.run_reference(args)
    many = bench.run_sharded(args)  # 2 gloo processes, each with half the database
    assert many["mAP"] == pytest.approx(ours["mAP"], rel=1e-6) and many["time"] > 0 and many["peak"] > 0
    assert many["held"] == 90  # its own half, plus the other's while it visits for the expansion
    assert ours["time"] > 0 and ours["peak"] >= ours["inputs"] > 0 and 0 <= ours["mAP"] <= 100
    assert reference["extrapolated"] and reference["peak"] == 4.0 * 120 ** 2 + 4.0 * 2 * 120 * 16 + 16 * 30 * 90
    big = bench.run_million_ours(args)
    assert [nprobe for nprobe, _, _ in big["ivf"]] == [4, 16]
    assert big["ivf"][0][2] == 1.0  # 4 lists probed out of 4: the IVF search is exact

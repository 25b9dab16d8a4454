"""CUDA paths: fp16 AMP + GradScaler training and exact resume, channels_last + compile training,
extraction and k-NN on CUDA against the CPU, and a one-GPU DDP (NCCL) run. Skipped without CUDA."""
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from engine_standins import InterruptAt, TinyReid, TinyTrainer, log_every_iteration, read_metrics, tiny_cfg
from fastreid.engine.events import JSONWriter

if not torch.cuda.is_available():
    print("tests/test_cuda.py: skipped, CUDA is not available on this machine")
    pytestmark = pytest.mark.skip(reason="CUDA is not available on this machine")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CudaTrainer(TinyTrainer):
    """The stand-in trainer on the GPU, every iteration logged, metrics.json only (no tensorboard)."""

    @classmethod
    def build_model(cls, cfg):
        return super().build_model(cfg).cuda()

    def __init__(self, cfg):
        super().__init__(cfg)
        log_every_iteration(self)

    def build_writers(self):
        return [JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]


@pytest.fixture
def deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)


def _losses(out):
    return {m["iteration"]: m["loss_cls"] for m in read_metrics(out) if "loss_cls" in m}


def test_fp16_amp_with_grad_scaler_trains_and_resumes_exactly(tmp_path, deterministic):
    common = dict(MODEL__DEVICE="cuda", SOLVER__AMP__ENABLED=True, SOLVER__AMP__DTYPE="float16",
                  SOLVER__MAX_EPOCH=4, SOLVER__CHECKPOINT_PERIOD=1, TEST__EVAL_PERIOD=0)
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    t = CudaTrainer(tiny_cfg(full, **common))
    assert t.grad_scaler is not None and t.amp_dtype == "float16"
    before = t.module.heads.weight.detach().clone()
    t.train()
    assert not torch.equal(before, t.module.heads.weight.detach())
    interrupted = CudaTrainer(tiny_cfg(cut, **common))
    interrupted.register_hooks([InterruptAt(6)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    resumed = CudaTrainer(tiny_cfg(cut, **common))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    a, b = _losses(full), _losses(cut)
    assert [b[i] for i in range(4, 16)] == [a[i] for i in range(4, 16)]
    fa = torch.load(os.path.join(full, "model_final.pth"), weights_only=True)
    fb = torch.load(os.path.join(cut, "model_final.pth"), weights_only=True)
    assert "grad_scaler" in fa and fa["grad_scaler"]["scale"] == fb["grad_scaler"]["scale"]
    assert all(torch.equal(fa["model"][k], fb["model"][k]) for k in fa["model"])


def test_channels_last_and_compile_train_on_cuda(tmp_path):
    cfg = tiny_cfg(str(tmp_path), MODEL__DEVICE="cuda", SOLVER__CHANNELS_LAST=True, SOLVER__COMPILE=True,
                   SOLVER__AMP__ENABLED=True, SOLVER__AMP__DTYPE="bfloat16", SOLVER__MAX_ITER=3,
                   TEST__EVAL_PERIOD=0)
    t = CudaTrainer(cfg)
    assert t.optimizer.defaults.get("fused") is True
    before = t.module.backbone[0].weight.detach().clone()
    t.train()
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert set(saved) == set(TinyReid().state_dict())
    assert not torch.equal(before.cpu(), saved["backbone.0.weight"])
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())


def _resnet_cfg():
    from fastreid.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                         "MODEL.BACKBONE.WITH_IBN", "True", "MODEL.HEADS.NUM_CLASSES", "10",
                         "MODEL.HEADS.POOL_LAYER", "GeneralizedMeanPoolingP"])
    return cfg


def _cpu_and_gpu_models(cfg):
    """The same randomly initialised model twice, in eval mode: on the CPU and on the GPU."""
    from fastreid.modeling import build_model

    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    cpu_model = build_model(cfg).eval()
    gpu_model = build_model(cfg).eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    return cpu_model, gpu_model.cuda()


def test_extraction_on_cuda_with_auto_precision_matches_cpu():
    from fastreid.evaluation import extract_features

    cpu_model, gpu_model = _cpu_and_gpu_models(_resnet_cfg())
    images = torch.rand(16, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        ref = extract_features(cpu_model, {"images": images}, amp_dtype="")
        fp32 = extract_features(gpu_model, {"images": images}, amp_dtype="", channels_last=True).cpu()
        auto = extract_features(gpu_model, {"images": images}, amp_dtype="auto", channels_last=True).cpu()
    cos = torch.nn.functional.cosine_similarity
    assert cos(ref, fp32).min() > 0.999  # cuDNN convolutions may run in TF32
    assert cos(ref, auto).min() > 0.99  # float16 autocast


def test_knn_on_cuda_equals_cpu():
    from fastreid.evaluation.search import faiss, faiss_knn, torch_knn

    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(300, 64, generator=g), dim=1)
    d = torch.nn.functional.normalize(torch.randn(2000, 64, generator=g), dim=1)
    s_cpu, i_cpu = torch_knn(q, d, 10, device="cpu")
    s_gpu, i_gpu = torch_knn(q, d, 10, device="cuda")
    assert (i_cpu == i_gpu).float().mean() > 0.999
    assert torch.allclose(s_cpu, s_gpu, atol=1e-4)
    if faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        _, i_faiss = faiss_knn(q, d, 10, use_gpu=True)
        assert (i_faiss == i_cpu).float().mean() > 0.999


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_gpu_ddp_nccl_trains_and_rewraps(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, "tests")!r}]
        import torch, torch.distributed as dist
        from fastreid.engine.trainer import DefaultTrainer
        from engine_standins import TinyReid, make_batch
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        torch.cuda.set_device(0)
        model = TinyReid().cuda()
        opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        ddp = DefaultTrainer._ddp(model)
        for step in range(4):
            if step == 2:
                for p in model.backbone.parameters():
                    p.requires_grad_(True)
                ddp = DefaultTrainer._ddp(model)
            batch = {{k: v.cuda() for k, v in make_batch(0, 0, step, 8).items()}}
            loss = ddp(batch)["loss_cls"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert torch.isfinite(loss).item()
        dist.destroy_process_group()
        print("DDP OK")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "DDP OK" in r.stdout, r.stderr[-3000:]


def test_evaluator_on_cuda_equals_cpu_evaluation(tmp_path):
    from fastreid.evaluation import ReidEvaluator, inference_on_dataset

    cfg = _resnet_cfg()
    cfg.merge_from_list(["TEST.AMP_DTYPE", "", "OUTPUT_DIR", str(tmp_path), "TEST.SEARCH.BACKEND", "auto"])
    cpu_model, gpu_model = _cpu_and_gpu_models(cfg)
    g = torch.Generator().manual_seed(2)
    batches = [{"images": torch.rand(8, 3, 64, 64, generator=g) * 255, "targets": torch.arange(8) % 4 + 4 * (b % 2),
                "camids": torch.zeros(8, dtype=torch.long)} for b in range(6)]
    results, feats = [], []
    for model in (cpu_model, gpu_model):
        evaluator = ReidEvaluator(cfg, num_query=16)
        results.append(inference_on_dataset(model, batches, evaluator))
        feats.append(evaluator._gather()[0])  # what the non-blocking copies delivered
    assert feats[0].shape == feats[1].shape == (48, 512)
    assert torch.nn.functional.cosine_similarity(feats[0], feats[1]).min() > 0.999  # cuDNN may use TF32
    assert results[0]["mAP"] == pytest.approx(results[1]["mAP"], abs=2.0)

"""``ReidEvaluator``: collects features and ids, then calls the pure functions of this package.

After extraction it runs the one retrieval pipeline (``pipeline.post_process``: DBA -> alpha-QE, fixed
or chosen by ``TEST.AQE.AUTO`` -> normalisation), then exact metrics in query chunks (labeled sets) or
``pipeline.rank`` and ``result.npy`` (unlabeled sets), with optional k-reciprocal re-ranking of the
top candidates, and optional visualisation.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..config.checks import choice_problem
from ..utils import comm
from . import sharded
from .evaluator import DatasetEvaluator, resolve_amp_dtype
from .metrics import per_query_metrics, summarize
from .pipeline import RetrievalOptions, labeled_ranks, post_process, rank, search_depth
from .qe_tuning import TUNED_METRICS, QEChoice, choice_path, load_choice, save_choice, tune_post_processing
from .search import recall_against_exact, torch_knn
from .submission import write_result
from .visualize import worst_queries, write_retrieval_visualisation

logger = logging.getLogger(__name__)

# Queries used to measure an IVF index's recall against exact search.
_RECALL_SAMPLE = 1000
# TEST.FEAT_DTYPE values: how collected features are stored.
FEAT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def validate(cfg: Any) -> List[str]:
    """Problems with the evaluation's ``TEST.*`` values (one line each): feature storage, autocast, the
    retrieval pipeline's options (metric, search, expansion) and ``TEST.AQE.AUTO``'s."""
    t = cfg.TEST
    problems = choice_problem("TEST.FEAT_DTYPE", t.FEAT_DTYPE, tuple(FEAT_DTYPES))
    for check in (lambda: resolve_amp_dtype(t.AMP_DTYPE, torch.device("cpu")),
                  lambda: RetrievalOptions.from_config(cfg, QEChoice.none())):
        try:
            check()
        except ValueError as e:
            problems.append(str(e))
    if t.AQE.AUTO:
        problems += choice_problem("TEST.AQE.AUTO_CRITERION", t.AQE.AUTO_CRITERION, TUNED_METRICS)
        if not 0 <= float(t.AQE.AUTO_CONFIDENCE) < 1:
            problems.append(f"TEST.AQE.AUTO_CONFIDENCE must be in [0, 1), got {t.AQE.AUTO_CONFIDENCE!r}")
        if any(int(k) < 1 for k in t.AQE.AUTO_DBA_K):
            problems.append(f"TEST.AQE.AUTO_DBA_K: every neighbour count must be >= 1, got {tuple(t.AQE.AUTO_DBA_K)}")
    return problems


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(list(values))


class ReidEvaluator(DatasetEvaluator):
    """Retrieval evaluator for query-then-gallery test loaders (see docs/evaluation.md).

    Args:
        cfg: config (``TEST.*`` keys).
        num_query: number of leading items of the dataset that are queries.
        output_dir: folder for ``result.npy`` and ``vis/``; defaults to ``cfg.OUTPUT_DIR``.
        labeled: False for the unlabeled challenge set: write ``result.npy`` instead of metrics.
    """

    def __init__(self, cfg: Any, num_query: int, output_dir: Optional[str] = None, labeled: bool = True) -> None:
        self.cfg = cfg
        self.num_query = num_query
        self.output_dir = output_dir if output_dir is not None else cfg.OUTPUT_DIR
        self.labeled = labeled
        problems = validate(cfg)
        if problems:
            raise ValueError(problems[0])
        self._store_dtype = FEAT_DTYPES[cfg.TEST.FEAT_DTYPE]
        # TEST.AQE.AUTO: labeled sets choose the expansion, unlabeled ones apply the recorded choice,
        # which is read here so that a missing choice fails before feature extraction.
        self._qe_choice: Optional[QEChoice] = None
        if cfg.TEST.AQE.AUTO and not labeled:
            self._qe_choice = load_choice(self.qe_choice_path)
        # Every option is checked now, before extraction; on a labeled set AUTO's expansion is set once chosen.
        self.options = RetrievalOptions.from_config(cfg, self._qe_choice or QEChoice.none())
        self.reset()

    @property
    def qe_choice_path(self) -> str:
        """Where ``TEST.AQE.AUTO`` records (labeled sets) and reads (unlabeled sets) its choice."""
        return choice_path(self.cfg, self.output_dir)

    def reset(self) -> None:
        """Drop the features and ids collected so far."""
        # Most gallery feature rows this process held at once in the last sharded evaluation.
        self.gallery_rows_held = 0
        self._features: List[torch.Tensor] = []
        self._pids: List[np.ndarray] = []
        self._camids: List[np.ndarray] = []
        self._paths: List[str] = []

    def process(self, inputs: Dict[str, Any], outputs: torch.Tensor) -> None:
        """Keep a batch's features (on the CPU, as ``TEST.FEAT_DTYPE``), ids, cameras and paths.

        The copy from the GPU does not wait for it (``non_blocking``), so that the next batch is queued
        while this one computes; ``_gather`` synchronises before the features are read.
        """
        feats = outputs.detach().to(self._store_dtype)
        self._features.append(feats.to("cpu", non_blocking=feats.is_cuda))
        n = outputs.shape[0]
        self._pids.append(_to_numpy(inputs["targets"]) if "targets" in inputs else np.full(n, -1))
        self._camids.append(_to_numpy(inputs["camids"]) if "camids" in inputs else np.zeros(n, np.int64))
        self._paths.extend(inputs.get("img_paths", [""] * n))

    def _local(self) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """This process's features (as stored), ids and cameras, in dataset order."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the non-blocking copies of ``process`` have landed
        feats = torch.cat(self._features) if self._features else torch.empty(0, 0, dtype=self._store_dtype)
        return (feats, np.concatenate(self._pids) if self._pids else np.empty(0, np.int64),
                np.concatenate(self._camids) if self._camids else np.empty(0, np.int64))

    def _gather(self) -> Tuple[torch.Tensor, np.ndarray, np.ndarray, List[str]]:
        """Features and ids of all ranks in rank order (contiguous shards restore dataset order)."""
        feats, pids, camids = self._local()
        local = (feats, pids, camids, list(self._paths))
        if comm.get_world_size() == 1:
            return local
        parts = comm.all_gather(local)
        feats = torch.cat([p[0] for p in parts if p[0].numel()])
        return (feats, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                [path for p in parts for path in p[3]])

    def _shards_gallery(self) -> bool:
        """Whether this evaluation keeps each process's gallery part (``TEST.SHARD_GALLERY``): not for re-ranking or
        ``TEST.AQE.AUTO``'s choosing, which need every feature in one process."""
        if comm.get_world_size() == 1 or not self.cfg.TEST.SHARD_GALLERY:
            return False
        if self.options.rerank or (self.cfg.TEST.AQE.AUTO and self.labeled):
            logger.info("TEST.SHARD_GALLERY: %s needs every feature in one process; gathering them",
                        "re-ranking" if self.options.rerank else "TEST.AQE.AUTO's choosing")
            return False
        return True

    def evaluate(self) -> Dict[str, float]:
        """Metrics in percent (labeled), or ``{}`` after writing ``result.npy`` (unlabeled); ``{}`` off rank 0."""
        if self._shards_gallery():
            return self._evaluate_sharded()
        feats, pids, camids, paths = self._gather()
        if not comm.is_main_process():
            return {}
        nq = self.num_query
        if not 0 < nq < feats.shape[0]:
            raise ValueError(f"ReidEvaluator: num_query={nq} but {feats.shape[0]} features were gathered")
        query, gallery = feats[:nq].float(), feats[nq:].float()
        if self.cfg.TEST.AQE.AUTO and self.labeled:
            self._qe_choice = self._tune_qe(query, gallery, pids, camids)
            self.options = RetrievalOptions.from_config(self.cfg, self._qe_choice)
        query, gallery = post_process(query, gallery, self.options)
        if not self.labeled:
            return self._write_submission(query, gallery, paths)
        results = self._metrics(query, gallery, pids, camids, paths)
        if self.cfg.TEST.AQE.AUTO:
            choice = self._qe_choice
            base = choice.candidates[0]
            results.update((f"noQE-{name}", float(base[name])) for name in ("mAP", "mAP@10", "Rank-1"))
            results.update(QE_K=float(choice.qe_k), QE_ALPHA=choice.alpha,
                           DBA_K=float(self.options.dba_k if self.options.dba else 0),
                           RERANK=float(self.options.rerank))
        return results

    def _tune_qe(self, query: torch.Tensor, gallery: torch.Tensor, pids: np.ndarray,
                 camids: np.ndarray) -> QEChoice:
        """Choose the post-processing (expansion, and DBA / re-ranking when they are candidates) or none on
        this labeled set (raw features) and record the choice."""
        t, nq = self.cfg.TEST, self.num_query
        filt = len(np.unique(camids)) > 1
        choice = tune_post_processing(
            query, gallery, pids[:nq], pids[nq:], t.AQE.AUTO_K, t.AQE.AUTO_ALPHA, dba_ks=t.AQE.AUTO_DBA_K,
            rerank=bool(t.AQE.AUTO_RERANK), criterion=t.AQE.AUTO_CRITERION,
            q_cam=camids[:nq] if filt else None, g_cam=camids[nq:] if filt else None,
            confidence=float(t.AQE.AUTO_CONFIDENCE), min_gain=float(t.AQE.AUTO_MIN_GAIN), base=self.options)
        save_choice(choice, self.qe_choice_path, source=f"{nq} queries x {gallery.shape[0]} gallery items")
        if choice.chosen:
            row = choice.candidates[choice.chosen]
            logger.info("TEST.AQE.AUTO: %s (%s %.2f, baseline %s %.2f; gain %.2f, lower bound %.2f at %g confidence); "
                        "recorded in %s", row["steps"], choice.criterion, choice.score, choice.candidates[0]["steps"],
                        choice.baseline, row["gain"], row["gain_low"], choice.confidence, self.qe_choice_path)
        else:
            top = max(choice.candidates, key=lambda r: r["gain"])
            logger.info("TEST.AQE.AUTO: no post-processing gains more than its noise on %s (baseline %s %.2f; best "
                        "mean gain %.2f by %s, lower bound %.2f at %g confidence); recorded in %s", choice.criterion,
                        choice.candidates[0]["steps"], choice.baseline, top["gain"], top["steps"], top["gain_low"],
                        choice.confidence, self.qe_choice_path)
        return choice

    def _write_submission(self, query: torch.Tensor, gallery: torch.Tensor, paths: List[str]) -> Dict[str, float]:
        t, o = self.cfg.TEST, self.options
        scores, idx = rank(query, gallery, t.TOPK, o)
        recall = None
        if o.index != "flat":
            sample = _recall_sample(query.shape[0])
            depth = search_depth(idx.shape[1], o)
            approx = rank(query[sample], gallery, depth, o.replace(rerank=False))[1]
            exact = torch_knn(query[sample], gallery, depth, o.metric)[1]
            recall = (depth, len(sample), recall_against_exact(torch.from_numpy(approx), exact))
        nq = query.shape[0]
        return self._finish_submission(scores, idx, recall, paths[:nq], paths[nq:])

    def _finish_submission(self, scores: np.ndarray, idx: np.ndarray, recall: Optional[Tuple[int, int, float]],
                           q_paths: List[str], g_paths: List[str]) -> Dict[str, float]:
        """Log an approximate search's recall, write ``result.npy`` and the visualisation (rank 0)."""
        t = self.cfg.TEST
        if recall is not None:
            logger.info("%s index recall@%d against exact search on %d queries: %.4f", self.options.index, *recall)
        path = t.RESULT_PATH or os.path.join(self.output_dir, "result.npy")
        write_result(path, idx)
        logger.info("Unlabeled test set: result.npy written to %s (no metrics)", path)
        if t.VIS.ENABLED:
            write_retrieval_visualisation(os.path.join(self.output_dir, "vis"), q_paths, g_paths,
                                          idx, scores, range(min(t.VIS.NUM_QUERIES, len(q_paths))))
        return {}

    def _metrics(self, query: torch.Tensor, gallery: torch.Tensor, pids: np.ndarray, camids: np.ndarray,
                 paths: List[str]) -> Dict[str, float]:
        nq = self.num_query
        q_pids, g_pids = pids[:nq], pids[nq:]
        filt = len(np.unique(camids)) > 1
        q_cam, g_cam = (camids[:nq], camids[nq:]) if filt else (None, None)
        k = min(self.cfg.TEST.TOPK, gallery.shape[0])
        res = labeled_ranks(query, gallery, q_pids, g_pids, self.options, q_cam, g_cam, topk=k)
        return self._summarise(res, q_pids, g_pids, paths[:nq], paths[nq:], k)

    def _summarise(self, res: Dict[str, np.ndarray], q_pids: np.ndarray, g_pids: np.ndarray, q_paths: List[str],
                   g_paths: List[str], k: int) -> Dict[str, float]:
        """The reported metrics of positive ranks (``res`` as ``labeled_ranks`` gives it), and the visualisation."""
        t = self.cfg.TEST
        per_query = per_query_metrics(res["ranks"], res["num_pos"])
        summary = summarize(per_query)
        skipped = summary.pop("num_queries_without_positive")
        summary.pop("num_valid_queries")
        if skipped:
            logger.warning("%d of %d queries have no positive in the gallery and are excluded", skipped, len(q_pids))
        results = OrderedDict((name, summary[name]) for name in ("mAP", "mAP@10", "Rank-1", "Rank-5", "Rank-10",
                                                                 "mINP"))
        results["metric"] = (results["mAP"] + results["Rank-1"]) / 2
        if t.VIS.ENABLED:
            chosen = worst_queries(per_query.ap, t.VIS.NUM_QUERIES)
            write_retrieval_visualisation(os.path.join(self.output_dir, "vis"), q_paths, g_paths,
                                          res["topk_idx"][:, :k], res["topk_scores"][:, :k], chosen, q_pids, g_pids,
                                          per_query.ap)
        return results

    def _evaluate_sharded(self) -> Dict[str, float]:
        """:meth:`evaluate` with every process keeping its own gallery part (see :mod:`.sharded`)."""
        t, nq = self.cfg.TEST, self.num_query
        feats, pids, camids = self._local()
        num_local_q, counts = sharded.split_rows(feats.shape[0], nq)
        if not 0 < nq < sum(counts):
            raise ValueError(f"ReidEvaluator: num_query={nq} but {sum(counts)} features were extracted")
        dim = max(comm.all_gather(int(feats.shape[1])))
        query = torch.cat([q for q in comm.all_gather(feats[:num_local_q].float()) if q.numel()])
        local = feats[num_local_q:].float().reshape(-1, dim)
        shards = sharded.GalleryShards.of(local.shape[0], dim)
        q_pids, g_pids = sharded.gather_rows(pids[:num_local_q]), sharded.gather_rows(pids[num_local_q:])
        q_cam, g_cam = sharded.gather_rows(camids[:num_local_q]), sharded.gather_rows(camids[num_local_q:])
        paths: Tuple[List[str], List[str]] = ([], [])
        if t.VIS.ENABLED:  # the visualisation names drawings of every part
            parts = comm.all_gather((self._paths[:num_local_q], self._paths[num_local_q:]))
            paths = ([p for q, _ in parts for p in q], [p for _, g in parts for p in g])
        query, local = sharded.post_process(query, local, shards, self.options)
        if not self.labeled:
            top = sharded.merged_top(query, local, shards, t.TOPK, self.options)
            recall = None
            if self.options.index != "flat":
                sample = _recall_sample(nq)
                exact = sharded.merged_top(query[sample], local, shards, t.TOPK,
                                           self.options.replace(index="flat", backend="torch"))
                if exact is not None:  # rank 0: the sampled queries' approximate lists are rows of ``top``
                    approx = torch.from_numpy(top[1][sample.numpy()])
                    recall = (exact[1].shape[1], len(sample), recall_against_exact(approx, torch.from_numpy(exact[1])))
            self.gallery_rows_held = shards.peak_rows
            return {} if top is None else self._finish_submission(*top, recall, *paths)
        filt = len(np.unique(np.concatenate([q_cam, g_cam]))) > 1
        k = min(t.TOPK, shards.total)
        res = sharded.positive_ranks(query, local, shards, q_pids, g_pids, q_cam if filt else None,
                                     g_cam if filt else None, self.options.metric, topk=k if t.VIS.ENABLED else 0)
        self.gallery_rows_held = shards.peak_rows
        if not comm.is_main_process():
            return {}
        return self._summarise(res, q_pids, g_pids, *paths, k)


def _recall_sample(num_query: int) -> torch.Tensor:
    """The seeded queries on which an approximate index's recall against exact search is measured."""
    return torch.randperm(num_query, generator=torch.Generator().manual_seed(0))[:_RECALL_SAMPLE]

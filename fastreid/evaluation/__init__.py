"""Evaluation: pure functions on feature arrays (search, metrics, query expansion, re-ranking) and the
stateful ``ReidEvaluator`` that collects features and calls them."""
from .evaluator import DatasetEvaluator, extract_features, inference_on_dataset
from .metrics import per_query_metrics, positive_ranks, rank_positives_chunked, summarize
from .query_expansion import aqe, aqe_queries_only, dba
from .rank import evaluate_rank
from .reid_evaluation import ReidEvaluator
from .rerank import k_reciprocal_rerank
from .search import knn, normalize
from .submission import score_submission, write_result
from .testing import metrics_table, print_csv_format
from .visualize import render_query_grid, worst_queries, write_retrieval_visualisation

__all__ = [
    "DatasetEvaluator", "ReidEvaluator", "aqe", "aqe_queries_only", "dba", "evaluate_rank", "extract_features",
    "inference_on_dataset", "k_reciprocal_rerank", "knn", "metrics_table", "normalize", "per_query_metrics",
    "positive_ranks", "print_csv_format", "rank_positives_chunked", "render_query_grid", "score_submission",
    "summarize", "worst_queries", "write_result", "write_retrieval_visualisation",
]

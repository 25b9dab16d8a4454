"""The synthetic patent drawings: demo and test data, not part of the training library.

Procedural 3-D objects (``shapes``), drawn as hidden-line views (``line_render``), optionally as
scanned patent sheets (``drawing_sheet``), written in the exact DeepPatent layout (``generator``).
See docs/synthetic_data.md.
"""
from .generator import SyntheticSpec, generate, load_test_ground_truth, plan_patents, render_patent

__all__ = ["SyntheticSpec", "generate", "load_test_ground_truth", "plan_patents", "render_patent"]

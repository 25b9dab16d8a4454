"""The synthetic patent drawings: demo and test data, not part of the training library.

Procedural 3-D objects (``shapes``), drawn as hidden-line views (``line_render``), optionally as
scanned patent sheets (``drawing_sheet``), written in the exact DeepPatent layout (``generator``).
Real 3D product models from furniture catalogues (``catalog``) drawn the same way give the
real-object set (``object_patents``). See docs/synthetic_data.md and docs/object_patents.md.
"""
from .generator import SyntheticSpec, generate, load_test_ground_truth, plan_patents, render_patent

__all__ = ["SyntheticSpec", "generate", "load_test_ground_truth", "plan_patents", "render_patent"]

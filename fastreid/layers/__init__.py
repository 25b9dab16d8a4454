"""fast-reid's import path of the shared building blocks: ``from fastreid.layers import get_norm`` works.

The blocks live in :mod:`fastreid.modeling.layers`; this module only re-exports them.
"""
from fastreid.modeling.layers import *  # noqa: F401,F403
from fastreid.modeling.layers import __all__  # noqa: F401

"""fast-reid's import path of the initialisers (:mod:`fastreid.modeling.layers.weight_init`)."""
from fastreid.modeling.layers.weight_init import *  # noqa: F401,F403
from fastreid.modeling.layers.weight_init import __all__  # noqa: F401

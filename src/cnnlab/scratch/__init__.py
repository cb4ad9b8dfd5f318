"""The NumPy engine: layers with hand-written backprop (layers.py), PyTorch's optimizer rules
(optim.py) and the registry's small nets rebuilt from them (models.py). It imports NumPy only,
so it can be read on its own; `cnnlab gradcheck` proves it equal to PyTorch layer by layer."""

from cnnlab.scratch import layers, models, optim
from cnnlab.scratch.models import Sequential, build

__all__ = ["Sequential", "build", "layers", "models", "optim"]

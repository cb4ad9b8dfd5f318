"""The training engines: the protocol and registry (base), and each engine, imported here by name so
that importing ``cnnlab.train.engines`` registers all of them (core/names.py lists them; a test
checks the registry against that list)."""

from cnnlab.train.engines.base import ENGINES, Engine
from cnnlab.train.engines.scratch_engine import ScratchEngine
from cnnlab.train.engines.torch_engine import TorchEngine

__all__ = ["ENGINES", "Engine", "ScratchEngine", "TorchEngine"]

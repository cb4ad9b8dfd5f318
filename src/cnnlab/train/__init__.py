"""Training: the Trainer loop, its callbacks and the optimizer registry."""

from .callbacks import Callback
from .trainer import Trainer

__all__ = ["Callback", "Trainer"]

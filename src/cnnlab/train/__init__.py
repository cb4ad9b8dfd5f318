"""Training: the Trainer loop, its callbacks and the optimizer registry."""

from cnnlab.train.callbacks import Callback
from cnnlab.train.trainer import Trainer

__all__ = ["Callback", "Trainer"]

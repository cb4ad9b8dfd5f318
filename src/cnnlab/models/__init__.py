"""Model registry and builders; importing this registers every built-in family."""

from . import dense, mobilenet, resnet, simple_cnn, vgg  # noqa: F401  (registration side effect)
from .factory import MODELS, ModelSpec, count_parameters, create_model, list_models

__all__ = ["MODELS", "ModelSpec", "count_parameters", "create_model", "list_models"]

"""Model registry and builders; importing this registers every built-in family."""

from cnnlab.models import dense, mobilenet, pretrained, resnet, simple_cnn, vgg  # noqa: F401  (registration side effect)
from cnnlab.models.factory import MODELS, ModelSpec, count_parameters, create_model, get_spec, list_models

__all__ = ["MODELS", "ModelSpec", "count_parameters", "create_model", "get_spec", "list_models"]

"""diffuserve engine: model loading, exact reference samplers and the batched denoising engine."""

from .config import CheckpointError, ModelConfig
from .models.loader import LoadedModel, load_model
from .params import DiffusionParams, ParamError

__all__ = ["CheckpointError", "DiffusionParams", "LoadedModel", "ModelConfig", "ParamError", "load_model"]

"""diffuserve engine: model loading, exact reference samplers and the batched denoising engine."""

from .async_engine import AsyncEngine
from .engine_config import EngineConfig
from .llm_engine import LLMEngine, RequestResult
from .model_config import CheckpointError, ModelConfig
from .models.loader import LoadedModel, load_model
from .outputs import BlockOutput, EngineStats, StepStats
from .params import DiffusionParams, ParamError

__all__ = [
    "AsyncEngine", "BlockOutput", "CheckpointError", "DiffusionParams", "EngineConfig", "EngineStats",
    "LLMEngine", "LoadedModel", "ModelConfig", "ParamError", "RequestResult", "StepStats", "load_model",
]

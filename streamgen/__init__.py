"""streamgen: real-time streaming generation with causal few-step diffusion transformers."""
from streamgen.config import ModelConfig
from streamgen.presets import preset
from streamgen.pipeline import Pipeline, load_pipeline, shipped_models
from streamgen.session import Chunk, Session

__version__ = "0.1.0"
__all__ = ["ModelConfig", "preset", "Pipeline", "load_pipeline", "shipped_models", "Session", "Chunk"]

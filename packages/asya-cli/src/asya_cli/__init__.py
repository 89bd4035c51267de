"""asya: run a pipeline on one machine (``asya dev``), call its tools, list jobs."""

from .__about__ import __version__
from .pipeline import Pipeline, PipelineError, load_pipeline

__all__ = ["Pipeline", "PipelineError", "__version__", "load_pipeline"]

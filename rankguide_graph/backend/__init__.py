"""The model backend: local HuggingFace causal LMs driven a step at a time, one KV cache each.

Torch and transformers only; nothing here imports LangChain or LangGraph.
"""

from rankguide_graph.backend.engine import Observation, Step, StepEngine
from rankguide_graph.backend.layers import check_layer, decoder_layers, middle_layer
from rankguide_graph.backend.loading import LoadedModel, check_same_tokenizer, load_causal_lm
from rankguide_graph.backend.prompting import encode_conversation, encode_question
from rankguide_graph.backend.runner import FeedResult, ModelRunner
from rankguide_graph.backend.sampling import SamplingConfig, TokenSampler
from rankguide_graph.backend.stopping import DEFAULT_DELIMITER, StepStopRule, StopReason

__all__ = [
    "DEFAULT_DELIMITER",
    "FeedResult",
    "LoadedModel",
    "ModelRunner",
    "Observation",
    "SamplingConfig",
    "Step",
    "StepEngine",
    "StepStopRule",
    "StopReason",
    "TokenSampler",
    "check_layer",
    "check_same_tokenizer",
    "decoder_layers",
    "encode_conversation",
    "encode_question",
    "load_causal_lm",
    "middle_layer",
]

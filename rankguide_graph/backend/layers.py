"""Finding a model's decoder layers and checking layer indices.

Layer ``L`` means the *input* of decoder layer ``L``, which is ``hidden_states[L]`` in the
``output_hidden_states`` convention (``hidden_states[0]`` is the embedding output). That is where
SEAL reads its vectors and where RankGuide's public vLLM fork adds its steering vector.
"""

from __future__ import annotations

from torch import nn

from rankguide_graph.errors import ConfigError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers of a HuggingFace causal LM (Llama, Qwen2/3, Mistral, ...)."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ConfigError(
        f"cannot find the decoder layers of {type(model).__name__}: expected a ModuleList of "
        f"{n_layers} layers (model.model.layers in Llama-style models)"
    )


def middle_layer(num_layers: int) -> int:
    """Default signal/steering layer: the middle of the stack (``num_layers // 2``)."""
    return num_layers // 2


def check_layer(layer: int, num_layers: int, what: str = "layer") -> int:
    """Return ``layer`` if it indexes a decoder layer input (``0 <= layer < num_layers``)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ConfigError(f"{what} (={layer!r}) must be an int in [0, {num_layers - 1}]")
    if not 0 <= layer < num_layers:
        raise ConfigError(
            f"{what} (={layer}) is out of range for a model with {num_layers} decoder layers: "
            f"use 0..{num_layers - 1} (the input of that layer; the middle is "
            f"{middle_layer(num_layers)})"
        )
    return layer

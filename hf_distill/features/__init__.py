"""Feature distillation building blocks: layer maps, learned projections and layer-output capture."""

from .capture import LayerCapture, ensure_eager_attention, find_decoder_layers, num_decoder_layers
from .layer_maps import (
    STRATEGIES,
    LayerMap,
    build_layer_map,
    format_layer_map,
    last_k_map,
    print_layer_map,
    top_heavy_map,
    uniform_map,
    validate_map,
)
from .projections import PROJECTIONS_FILE, FeatureProjections

__all__ = [
    "PROJECTIONS_FILE",
    "STRATEGIES",
    "FeatureProjections",
    "LayerCapture",
    "LayerMap",
    "build_layer_map",
    "ensure_eager_attention",
    "find_decoder_layers",
    "format_layer_map",
    "last_k_map",
    "num_decoder_layers",
    "print_layer_map",
    "top_heavy_map",
    "uniform_map",
    "validate_map",
]

"""Pictures of what the models do and cost: attention maps, position encodings (sinusoidal and rotary),
training curves, rooflines, the KV cache per token, in-context accuracy against the shots."""
from .attention import (
    AttentionHead,
    AttentionMaps,
    attention_head,
    attention_kinds,
    attention_maps,
    cross_attention,
    plot_alignment,
    plot_attention,
)
from .curves import plot_curves, read_metrics
from .in_context import plot_in_context, read_curves
from .kv_cache import KV_PRESETS, kv_cache_comparison, plot_kv_cache
from .positions import (
    plot_positions,
    plot_rotary,
    position_similarity,
    positional_encoding,
    rotary_angles,
    rotary_frequencies,
)
from .roofline import classify, plot_flops_share, plot_roofline, ridge_point, roofline_points

__all__ = ["KV_PRESETS", "AttentionHead", "AttentionMaps", "attention_head", "attention_kinds", "attention_maps",
           "classify", "cross_attention", "kv_cache_comparison", "plot_alignment", "plot_attention", "plot_curves",
           "plot_flops_share", "plot_in_context", "plot_kv_cache", "plot_positions", "plot_roofline", "plot_rotary",
           "position_similarity", "positional_encoding", "read_curves", "read_metrics", "ridge_point",
           "roofline_points", "rotary_angles", "rotary_frequencies"]

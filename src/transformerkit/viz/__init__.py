"""Pictures of what the models do and cost: attention maps, position encodings, training curves,
rooflines."""
from .attention import AttentionMaps, attention_maps, cross_attention, plot_alignment, plot_attention
from .curves import plot_curves, read_metrics
from .positions import plot_positions, position_similarity
from .roofline import classify, plot_flops_share, plot_roofline, ridge_point, roofline_points

__all__ = ["AttentionMaps", "attention_maps", "classify", "cross_attention", "plot_alignment", "plot_attention",
           "plot_curves", "plot_flops_share", "plot_positions", "plot_roofline", "position_similarity",
           "read_metrics", "ridge_point", "roofline_points"]

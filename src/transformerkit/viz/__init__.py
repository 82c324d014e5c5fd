"""Pictures of what the models do: attention maps (and, with the analysis tools, what they cost)."""
from .attention import cross_attention, plot_alignment

__all__ = ["cross_attention", "plot_alignment"]

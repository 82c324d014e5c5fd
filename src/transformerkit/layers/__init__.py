"""The shared building blocks: attention, positions, norms, feed-forward, encoder and decoder blocks."""
from .attention import KVCache, MultiHeadAttention, Unpadded, build_attention_mask, explicit_attention
from .blocks import DecoderBlock, EncoderBlock
from .feedforward import FeedForward
from .norms import RMSNorm, make_norm
from .positions import LearnedPositions, RelativePositionBias, SinusoidalPositions, sinusoidal_table

__all__ = ["KVCache", "MultiHeadAttention", "Unpadded", "build_attention_mask", "explicit_attention", "DecoderBlock",
           "EncoderBlock", "FeedForward", "RMSNorm", "make_norm", "LearnedPositions", "RelativePositionBias",
           "SinusoidalPositions", "sinusoidal_table"]

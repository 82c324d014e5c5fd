"""The shared building blocks: embeddings, attention, positions, norms, feed-forward, encoder and decoder blocks."""
from .attention import KVCache, MultiHeadAttention, build_attention_mask, explicit_attention
from .blocks import DecoderBlock, EncoderBlock
from .embeddings import Embeddings, positions_from_mask
from .feedforward import FeedForward
from .norms import RMSNorm, make_norm
from .positions import (
    LearnedPositions,
    RelativePositionBias,
    RotaryPositions,
    SinusoidalPositions,
    apply_rotary,
    sinusoidal_table,
)
from .unpadded import Unpadded

__all__ = ["KVCache", "MultiHeadAttention", "Unpadded", "build_attention_mask", "explicit_attention", "DecoderBlock",
           "EncoderBlock", "Embeddings", "positions_from_mask", "FeedForward", "RMSNorm", "make_norm",
           "LearnedPositions", "RelativePositionBias", "RotaryPositions", "SinusoidalPositions", "apply_rotary",
           "sinusoidal_table"]

"""What the planner pays for, priced from the model's shape: long rows (attention) and each
extra compiled shape (compilation), both in units of the forward's dense work per token."""

from __future__ import annotations

from layertap.model.config import DecoderConfig

# A compilation takes seconds on a CPU: about as long as 1 TFLOP of forward there. On an
# accelerator it takes longer, but there the work is larger still and the planner's relative
# price of a shape (plan.SHAPE_PRICE) is the larger one.
COMPILE_FLOPS = 1e12


def compile_tokens(config: DecoderConfig, blocks: int) -> float:
    """What one compilation costs, in tokens of the forward's dense work: the least an extra
    compiled shape must save. A small model compiles each shape for a few tokens' gain."""
    return COMPILE_FLOPS / (2 * config.block_matmul_params * blocks)


def attention_weight(config: DecoderConfig) -> float:
    """Attention FLOPs per token per unit of row length, relative to the dense FLOPs per token
    (q/k/v/o projections and MLP) of a layer: the planner's price of long rows."""
    return 4 * config.num_attention_heads * config.head_dim / (2 * config.block_matmul_params)

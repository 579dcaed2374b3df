"""Model representation: spec ⇄ timm model, small configs, analytic MACs, token selection."""

from vitc.models.flops import model_macs, per_block_macs
from vitc.models.registry import SMALL_CONFIGS, resolve_model
from vitc.models.spec import BlockSpec, ViTSpec, build, describe_blocks, spec_from_model

__all__ = [
    "BlockSpec", "ViTSpec", "build", "describe_blocks", "spec_from_model",
    "SMALL_CONFIGS", "resolve_model", "model_macs", "per_block_macs",
]

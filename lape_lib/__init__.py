"""lape_lib: LaPE (Layer-adaptive Position Embedding) for compact Vision Transformers.

    >>> from lape_lib import create_model, per_layer_pe, pe_similarity
    >>> model = create_model("vit_lite_7_4", pe="learnable", join="lape")
"""

from .analysis import affine_split, lambda_coefficients, pe_similarity, per_layer_attn_bias, per_layer_pe
from .models import JOINS, LAPE_JOINS, OUT_OF_STREAM_JOINS, ModelConfig, VisionTransformer, create_model, list_models, register_model
from .pos_embed import PE_TYPES
from .timm_lape import LaPEVisionTransformer, lapeify

__version__ = "0.1.0"

__all__ = [
    "JOINS", "LAPE_JOINS", "OUT_OF_STREAM_JOINS", "LaPEVisionTransformer", "PE_TYPES", "ModelConfig", "VisionTransformer", "affine_split", "create_model",
    "lambda_coefficients", "lapeify", "list_models", "pe_similarity", "per_layer_attn_bias", "per_layer_pe",
    "register_model",
]

"""attnspec.spec: the executable specification (normative text).

Imports only numpy, ml-dtypes, the standard library and itself. One operation per module:

- ``formats``   binary formats, correctly rounded conversion, bit views, ulp
- ``policy``    precision policies: where an algorithm rounds
- ``errors``    the exceptions raised on bad input
- ``masks``     causal alignment, sliding window
- ``problem``   validation of one attention problem (shapes, GQA, masks, lengths)
- ``attention`` the normative definition of softmax attention
- ``flash``     FlashAttention-2's online-softmax recurrence
- ``split_kv``  flash-decoding partials and the LSE combine
- ``paged``     paged KV caches
- ``rope``      rotary embeddings on interleaved pairs, with YaRN
- ``mla``       DeepSeek MLA: naive, absorbed, and the FlashMLA/AMLA kernel view
- ``amla``      AMLA, Huawei's Ascend MLA kernel (the exponent-add rescale), with named variants
- ``pasa``      PASA, pseudo-average shifting attention in FP16, with named variants
- ``pasa_beta`` PASA's rounding-aware choice of beta (the fixed points)
"""

from .attention import POLICY_FP64, AttentionResult, attention
from .errors import (AttnSpecError, ConventionError, DomainError, FormatError, ImplementationError, MaskError,
                     ShapeError, VectorFileError)
from .flash import POLICY_FP32, flash_attention
from .formats import Format, get_format, round_to
from .policy import PrecisionPolicy
from .problem import AttentionProblem, attention_problem
from .split_kv import split_kv_attention

__all__ = [
    "AttentionProblem", "AttentionResult", "AttnSpecError", "ConventionError", "DomainError", "Format",
    "FormatError", "ImplementationError", "MaskError", "POLICY_FP32", "POLICY_FP64", "PrecisionPolicy",
    "ShapeError", "VectorFileError", "attention", "attention_problem", "flash_attention", "get_format",
    "round_to", "split_kv_attention",
]

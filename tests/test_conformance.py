"""The calling convention: array conversion, declarations, loading, adapters and their failures."""

import importlib.util

import numpy as np
import pytest

from attnspec.reference.cases import build_case
from attnspec.reference.conformance import (Kernel, as_kernel, call_kernel, declare, flash_attn_kernel,
                                            flash_mla_kernel, load_impl, sdpa_kernel, to_numpy)
from attnspec.reference.harness import check
from attnspec.reference.mutants import CORRECT
from attnspec.spec.attention import attention
from attnspec.spec.errors import ConventionError, ImplementationError
from attnspec.spec.formats import Format

CASE = build_case("uniform", "fp32", {"seed": 3, "b": 1, "hkv": 1, "group": 2, "sq": 3, "sk": 7, "dk": 4, "dv": 5,
                                      "scale_factor": 1.0, "causal": True, "causal_alignment": "bottom_right"})


class OnlyArray:
    """An array type with __array__ only (like a framework tensor without DLPack)."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._a, dtype=dtype)


def test_to_numpy_accepts_numpy_array_protocol_and_dlpack():
    a = np.arange(6.0).reshape(2, 3)
    assert to_numpy(a, "x") is a
    np.testing.assert_array_equal(to_numpy(OnlyArray(a), "x"), a)
    with pytest.raises(ImplementationError, match="x: expected a numpy array"):
        to_numpy(object(), "x")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed (optional)")
def test_to_numpy_reads_torch_tensors_bfloat16_included():
    import torch
    t = torch.tensor([1.0, 2.5, -3.0], dtype=torch.bfloat16)
    assert to_numpy(t, "t").tolist() == [1.0, 2.5, -3.0]
    assert to_numpy(torch.ones(2, dtype=torch.float16), "t").dtype == np.float16


def test_accepts_is_read_from_the_signature():
    def kernel(q, k, v, *, scale, causal, window):
        return q
    assert as_kernel(kernel).accepts == {"scale", "causal", "window"}
    assert as_kernel(lambda q, k, v, **kw: q).accepts == {"scale", "causal", "causal_alignment", "window", "softcap",
                                                          "mask", "q_seqlens", "kv_seqlens"}


def test_declare_sets_kernel_fields():
    @declare(empty_lse=np.inf, formats=("bf16",), name="mine")
    def kernel(q, k, v, *, scale):
        return q
    k = as_kernel(kernel)
    assert (k.empty_lse, k.formats, k.name) == (np.inf, (Format.BF16,), "mine")
    with pytest.raises(ConventionError, match="accepts"):
        Kernel(fn=kernel, name="x", accepts=frozenset({"dropout"}))
    with pytest.raises(ConventionError, match="empty_lse"):
        Kernel(fn=kernel, name="x", empty_lse=0.0)


def test_load_impl_errors_name_the_problem():
    with pytest.raises(ImplementationError, match="module:function"):
        load_impl("no_colon")
    with pytest.raises(ImplementationError, match="cannot import"):
        load_impl("no_such_module_xyz:f")
    with pytest.raises(ImplementationError, match="no attribute"):
        load_impl("attnspec.reference.mutants:nothing_here")
    assert load_impl("attnspec.spec.attention:attention").name == "attnspec.spec.attention:attention"


def test_wrong_output_shape_is_an_implementation_error():
    def transposed(q, k, v, *, scale):
        return np.swapaxes(attention(q, k, v, scale=scale).out, 1, 2)
    with pytest.raises(ImplementationError, match="expected out of shape"):
        call_kernel(as_kernel(transposed), CASE)


def test_flash_attn_adapter_transposes_and_reads_the_lse():
    calls = {}

    def flash_attn_func(q, k, v, softmax_scale=None, causal=False, return_attn_probs=False):
        calls["layout"] = q.shape
        r = attention(*(np.swapaxes(a, 1, 2) for a in (q, k, v)), scale=softmax_scale, causal=causal, empty_lse=np.inf)
        out = np.swapaxes(r.out, 1, 2).astype(q.dtype)
        return (out, r.lse, None) if return_attn_probs else out

    kernel = flash_attn_kernel(flash_attn_func)
    assert kernel.accepts == {"scale", "causal"} and kernel.returns_lse_keyword == "return_attn_probs"
    output = call_kernel(kernel, CASE)
    assert calls["layout"] == (1, 3, 2, 4) and output.lse is not None  # (B, S, H, D)
    assert check(kernel, op="flash", dtype="fp32", examples=2, save=False).ok


def test_sdpa_adapter_folds_causal_into_the_mask_top_left():
    def sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None):
        allowed = np.ones((q.shape[2], k.shape[2]), bool) if attn_mask is None else attn_mask
        if is_causal:
            allowed = allowed & np.tril(np.ones((q.shape[2], k.shape[2]), bool))
        return attention(q, k, v, scale=scale, mask=allowed).out

    kernel = sdpa_kernel(sdpa)
    assert kernel.causal_alignment == "top_left" and not kernel.gqa
    assert check(kernel, op="attention", dtype="fp32", examples=2, save=False).ok


def test_flash_mla_adapter_passes_the_scheduler_metadata():
    seen = {}

    def get_mla_metadata(cache_seqlens, heads_per_kv, h_kv):
        seen["args"] = (heads_per_kv, h_kv)
        return "metadata", 1

    def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, metadata, num_splits, *,
                               softmax_scale, causal):
        seen["metadata"] = metadata
        return CORRECT["spec_mla"].kernel.fn(q, k_cache, block_table, cache_seqlens, head_dim_v=head_dim_v,
                                             softmax_scale=softmax_scale, causal=causal)

    kernel = flash_mla_kernel(flash_mla_with_kvcache, get_metadata=get_mla_metadata)
    case = build_case("flashmla", "bf16", {"seed": 1, "b": 1, "hq": 3, "hkv": 1, "sq": 2, "dk": 576, "dv": 512,
                                           "page": 64, "cache_seqlens": [70], "scale": 0.135234, "causal": True})
    output = call_kernel(kernel, case)
    assert seen == {"args": (6, 1), "metadata": "metadata"} and output.out.shape == (1, 3, 2, 512)
    assert kernel.head_dims == (576, 512) and kernel.empty_lse == np.inf

"""The calling convention for a user's attention kernel, adapters for common signatures, and peers.

A *kernel* is any callable the conformance kit can call with a case and read an O (and
optionally an LSE) back from. The kit knows three call signatures; a kernel declares which
one it has, and what it supports, in a :class:`Kernel`. Wrapping a kernel takes a few lines::

    from attnspec.reference.conformance import declare

    @declare(empty_lse=float("inf"), formats=("bf16", "fp16"))
    def my_attention(q, k, v, *, scale, causal, kv_seqlens):
        ...                      # returns out, or (out, lse)

Signature ``"attention"`` (the attnspec convention, ``op`` attention and pasa)
    ``fn(q, k, v, **conventions)`` with q (B, Hq, Sq, Dk), k (B, Hkv, Sk, Dk), v (B, Hkv, Sk, Dv)
    as arrays of the case's storage dtype (``numpy.float32``, ``ml_dtypes.bfloat16``,
    ``numpy.float16``). The kernel receives exactly the convention keywords its signature
    names (or all of them if it takes ``**kwargs``), always with explicit values:

    ==================  =========================================================================
    scale               float, the factor of Q K^T (never None)
    causal              bool
    causal_alignment    "bottom_right" | "top_left" (see spec.masks)
    window              (left, right), ints or None for an unbounded side, or None for no window
    softcap             float or None (cap * tanh(S / cap), before the mask)
    mask                bool (B, 1, Sq, Sk), True = may attend, or None
    q_seqlens           int32 (B,) valid query prefix of each batch, or None
    kv_seqlens          int32 (B,) valid key prefix of each batch (slots past it hold garbage), or None
    ==================  =========================================================================

    It returns ``out`` (B, Hq, Sq, Dv) or ``(out, lse)`` with lse (B, Hq, Sq), the natural-log
    LSE of the scaled, capped, masked logits. Query head h uses kv head h // (Hq / Hkv).
    A case never uses a convention the kernel does not take: a kernel without ``window`` is
    never given a windowed case, one without ``causal_alignment`` gets its declared
    alignment, one without ``scale`` gets 1/sqrt(Dk).

Signature ``"flash"`` (FlashAttention's ``flash_attn_func``, ``op`` flash)
    ``fn(q, k, v, softmax_scale=, causal=, [window_size=], [softcap=], [return_attn_probs=])``
    with (B, S, H, D) layout, bottom-right causal, window ``(-1, -1)`` for none and softcap
    0.0 for none; ``return_attn_probs=True`` returns ``(out, lse, ...)``. See
    :func:`flash_attn_kernel`.

Signature ``"mla"`` (FlashMLA's paged decode, ``op`` mla and amla)
    ``fn(q, k_cache, block_table, cache_seqlens, *, head_dim_v, softmax_scale, causal)`` with
    q (B, s_q, h_q, Dk), k_cache (num_blocks, page, h_kv, Dk) whose first ``head_dim_v``
    channels are V, block_table int32 (B, max_blocks), cache_seqlens int32 (B,); returns
    ``(out (B, s_q, h_q, Dv), lse (B, h_q, s_q))``. Causal is bottom-right per sequence.
    Unused table entries and cache slots hold garbage (NaN) and must not be read. See
    :func:`flash_mla_kernel` for the real FlashMLA interface.

Arrays: a kernel may return numpy arrays or anything with ``__dlpack__`` or ``__array__``
(torch, jax, cupy), on any device; none of those packages is imported unless a peer or an
``arrays=`` converter asks for it. :func:`torch_arrays` converts inputs for torch kernels,
bfloat16 included.

Declaring support (:class:`Kernel` fields): ``formats`` the input formats it accepts;
``empty_lse`` the LSE it reports for a row with no admissible key (FA2 and FlashMLA +inf,
FA3 and attnspec -inf); ``lse_format`` the format its LSE is computed in (the LSE rule's
unit roundoff); ``gqa`` whether Hq may exceed Hkv; ``empty_kv`` whether Sk = 0 may be
passed; ``head_dims`` a required (Dk, Dv) such as FlashMLA's (576, 512).

Peers (optional packages, imported only when asked for): :func:`torch_sdpa`,
:func:`onnx_reference`, :func:`onnxruntime_attention`. How their conventions map onto
attnspec's is documented on each and in docs/conformance.md.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from attnspec.spec.errors import ConventionError, ImplementationError, require
from attnspec.spec.formats import Format, as_float64, format_of_dtype, get_format

CONVENTION_KEYWORDS = ("scale", "causal", "causal_alignment", "window", "softcap", "mask", "q_seqlens", "kv_seqlens")
SIGNATURES = ("attention", "flash", "mla")
INPUT_FORMATS = (Format.FP32, Format.BF16, Format.FP16)

# FlashAttention's keyword names for the conventions a flash-signature kernel may take.
_FLASH_KEYWORDS = {"softmax_scale": "scale", "causal": "causal", "window_size": "window", "softcap": "softcap"}
_MLA_KEYWORDS = {"softmax_scale": "scale", "causal": "causal"}


@dataclass(frozen=True)
class Kernel:
    """A user's kernel, how to call it, and what it declares it supports (see the module docstring)."""

    fn: Callable[..., Any]
    name: str
    signature: str = "attention"
    accepts: frozenset = frozenset()
    causal_alignment: str = "bottom_right"
    empty_lse: float = -np.inf
    lse_format: Format = Format.FP32
    formats: tuple = INPUT_FORMATS
    gqa: bool = True
    empty_kv: bool = True
    head_dims: tuple[int, int] | None = None
    arrays: Callable[[np.ndarray], Any] | None = None
    returns_lse_keyword: str | None = None  # flash signature: the keyword that makes fn return the LSE

    def __post_init__(self) -> None:
        require(self.signature in SIGNATURES, ConventionError,
                f"signature: expected one of {SIGNATURES}, got {self.signature!r}")
        unknown = set(self.accepts) - set(CONVENTION_KEYWORDS)
        require(not unknown, ConventionError,
                f"accepts: expected names from {CONVENTION_KEYWORDS}, got unknown {sorted(unknown)}")
        require(self.causal_alignment in ("bottom_right", "top_left"), ConventionError,
                f"causal_alignment: expected 'bottom_right' or 'top_left', got {self.causal_alignment!r}")
        require(self.empty_lse in (np.inf, -np.inf) or np.isnan(self.empty_lse), ConventionError,
                f"empty_lse: expected +inf, -inf or nan, got {self.empty_lse!r}")
        object.__setattr__(self, "accepts", frozenset(self.accepts))
        object.__setattr__(self, "lse_format", get_format(self.lse_format))
        object.__setattr__(self, "formats", tuple(get_format(f) for f in self.formats))
        if self.head_dims is not None:
            require(len(self.head_dims) == 2 and all(int(d) >= 1 for d in self.head_dims), ConventionError,
                    f"head_dims: expected a (Dk, Dv) pair of positive ints, got {self.head_dims!r}")

    def supports(self, convention: str) -> bool:
        """Return True when cases may set ``convention`` to a non-default value for this kernel."""
        return convention in self.accepts


@dataclass(frozen=True)
class KernelOutput:
    """What a kernel returned, as float64 arrays in attnspec's layout."""

    out: np.ndarray  # (B, Hq, Sq, Dv)
    lse: np.ndarray | None  # (B, Hq, Sq) or None when the kernel returns no LSE
    out_format: Format | None  # the format of the returned O array, None when not a float format


def declare(fn: Callable | None = None, **declared) -> Any:
    """Return ``fn`` marked with ``declared`` Kernel fields; usable as ``@declare`` or ``@declare(...)``."""
    def mark(f: Callable) -> Callable:
        f.__attnspec__ = dict(declared)
        return f
    return mark(fn) if fn is not None else mark


def as_kernel(obj: Any, *, signature: str | None = None, **overrides) -> Kernel:
    """Return ``obj`` as a :class:`Kernel`: a Kernel, a ``@declare``-d function or a plain callable.

    ``signature`` is the op's default when ``obj`` does not declare one. ``accepts`` is read from
    the function's parameters unless declared.
    """
    if isinstance(obj, Kernel):
        return replace(obj, **overrides) if overrides else obj
    require(callable(obj), ImplementationError, f"impl: expected a callable or a Kernel, got {type(obj).__name__}")
    fields = dict(getattr(obj, "__attnspec__", {}))
    fields.update(overrides)
    fields.setdefault("signature", signature or "attention")
    fields.setdefault("name", _callable_name(obj))
    if "accepts" not in fields:
        fields["accepts"], lse_keyword = _infer_accepts(obj, fields["signature"])
        fields.setdefault("returns_lse_keyword", lse_keyword)
    return Kernel(fn=obj, **fields)


def load_impl(spec: str, *, signature: str | None = None) -> Kernel:
    """Return the Kernel named by ``"module:attribute"`` (a callable, a ``@declare``-d callable or a Kernel)."""
    require(isinstance(spec, str) and spec.count(":") == 1 and all(spec.split(":")), ImplementationError,
            f"impl: expected 'module:function', got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImplementationError(f"impl: cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the user's module raised while it was imported: that is the user's code failing
        raise ImplementationError(f"impl: cannot import module {module_name!r}: it raised "
                                  f"{type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        require(hasattr(obj, part), ImplementationError, f"impl: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    named = isinstance(obj, Kernel) or "name" in getattr(obj, "__attnspec__", {})
    return as_kernel(obj, signature=signature) if named else as_kernel(obj, signature=signature, name=spec)


# ----------------------------------------------------------------------------------------------
# Arrays in and out
# ----------------------------------------------------------------------------------------------

def to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a host numpy array: numpy, or anything with ``__dlpack__`` or ``__array__``.

    No framework is imported. Device arrays are copied to the host through DLPack or through
    their own ``.cpu()`` (torch) or ``.get()`` (cupy); a dtype numpy cannot hold (torch
    bfloat16) is widened exactly with the array's own ``.float()``.
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        for kwargs in ({}, {"device": "cpu", "copy": True}):
            try:
                return np.from_dlpack(x, **kwargs)
            except (BufferError, TypeError, ValueError, RuntimeError):
                continue
    if hasattr(x, "__array__"):
        try:
            return np.asarray(x)
        except (TypeError, ValueError, RuntimeError):
            pass
    for method in ("cpu", "get"):  # torch .cpu() returns the tensor itself when it is already on the host
        moved = getattr(x, method, None)
        host = moved() if callable(moved) else x
        if host is not x:
            return to_numpy(host, name)
    if callable(getattr(x, "float", None)):
        return _widen(x, name)
    raise ImplementationError(f"{name}: expected a numpy array or an object with __dlpack__ or __array__, "
                              f"got {type(x).__module__}.{type(x).__name__}")


def _widen(x: Any, name: str) -> np.ndarray:
    widened = x.float()
    require(widened is not x, ImplementationError, f"{name}: cannot convert {type(x).__name__} to numpy")
    return to_numpy(widened, name)


def torch_arrays(device: str = "cpu") -> Callable[[np.ndarray], Any]:
    """Return a converter of numpy inputs into torch tensors on ``device`` (bfloat16 included).

    Use it as ``Kernel(arrays=torch_arrays("cuda"))`` or in the adapters' ``arrays=``.
    """
    torch = importlib.import_module("torch")

    def convert(a: np.ndarray) -> Any:
        if a.dtype == get_format("bf16").info.storage:  # torch cannot import ml_dtypes.bfloat16
            return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).to(device)
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return convert


def storage(values: np.ndarray, fmt: Format) -> np.ndarray:
    """Return float64 values of ``fmt`` as an array of fmt's storage dtype (exact)."""
    return np.asarray(values, dtype=np.float64).astype(fmt.info.storage)


# ----------------------------------------------------------------------------------------------
# Calling a kernel on a case
# ----------------------------------------------------------------------------------------------

def call_kernel(kernel: Kernel, case) -> KernelOutput:
    """Return the kernel's output on ``case`` (a :class:`reference.cases.Case`), in attnspec's layout.

    Raises ImplementationError when the kernel raises or returns something of the wrong
    shape; the harness reports that as a failure of the case.
    """
    convert = kernel.arrays or (lambda a: a)
    caller = {"attention": _call_attention, "flash": _call_flash, "mla": _call_mla}[kernel.signature]
    try:
        result = caller(kernel, case, convert)
    except ImplementationError:
        raise
    except Exception as exc:  # the kernel's own failure is a finding about the kernel
        raise ImplementationError(f"{kernel.name}: raised {type(exc).__name__}: {exc}") from exc
    out, lse, dtype = result
    b, hq, sq, _ = case.q.shape
    dv = case.v.shape[3]
    require(out.shape == (b, hq, sq, dv), ImplementationError,
            f"{kernel.name}: expected out of shape (B, Hq, Sq, Dv) = {(b, hq, sq, dv)}, got {out.shape}")
    if lse is not None:
        require(lse.shape == (b, hq, sq), ImplementationError,
                f"{kernel.name}: expected lse of shape (B, Hq, Sq) = {(b, hq, sq)}, got {lse.shape}")
    return KernelOutput(out=out, lse=lse, out_format=format_of_dtype(dtype))


def _split_result(result: Any, name: str) -> tuple[np.ndarray, np.ndarray | None, np.dtype]:
    """Return (out, lse or None, out dtype) from a kernel's return value."""
    if isinstance(result, (tuple, list)):
        require(len(result) >= 2, ImplementationError,
                f"{name}: expected out or (out, lse, ...), got a sequence of length {len(result)}")
        out_raw, lse_raw = to_numpy(result[0], f"{name} out"), to_numpy(result[1], f"{name} lse")
        return as_float64(out_raw, "out"), as_float64(lse_raw, "lse"), out_raw.dtype
    out_raw = to_numpy(result, f"{name} out")
    return as_float64(out_raw, "out"), None, out_raw.dtype


def _call_attention(kernel: Kernel, case, convert) -> tuple:
    fmt = case.fmt
    kw = {name: _keyword_value(name, case.conventions.get(name), convert)
          for name in CONVENTION_KEYWORDS if name in kernel.accepts}
    result = kernel.fn(convert(storage(case.q, fmt)), convert(storage(case.k, fmt)), convert(storage(case.v, fmt)),
                       **kw)
    return _split_result(result, kernel.name)


def _keyword_value(name: str, value: Any, convert) -> Any:
    """Return a convention's value as the kernel receives it (arrays converted, scale explicit)."""
    if name in ("q_seqlens", "kv_seqlens") and value is not None:
        return convert(np.asarray(value, dtype=np.int32))
    if name == "mask" and value is not None:
        return convert(np.asarray(value, dtype=np.bool_))
    if name == "causal":
        return bool(value)
    if name == "causal_alignment":
        return value or "bottom_right"
    return value


def _call_flash(kernel: Kernel, case, convert) -> tuple:
    fmt = case.fmt
    bshd = [convert(storage(np.transpose(a, (0, 2, 1, 3)), fmt)) for a in (case.q, case.k, case.v)]  # (B, S, H, D)
    conv = case.conventions
    kw: dict[str, Any] = {}
    for keyword, convention in _FLASH_KEYWORDS.items():
        if convention not in kernel.accepts:
            continue
        if convention == "window":
            left, right = conv.get("window") or (None, None)
            kw[keyword] = (-1 if left is None else int(left), -1 if right is None else int(right))
        elif convention == "softcap":
            kw[keyword] = float(conv.get("softcap") or 0.0)  # FlashAttention spells "no softcap" 0.0
        else:
            kw[keyword] = _keyword_value(convention, conv.get(convention), convert)
    if kernel.returns_lse_keyword:
        kw[kernel.returns_lse_keyword] = True
    out, lse, dtype = _split_result(kernel.fn(*bshd, **kw), kernel.name)
    require(out.ndim == 4, ImplementationError, f"{kernel.name}: expected out of rank 4 (B, S, H, D), got {out.shape}")
    return np.transpose(out, (0, 2, 1, 3)), lse, dtype  # (B, Hq, Sq, Dv)


def _call_mla(kernel: Kernel, case, convert) -> tuple:
    require(case.paged is not None, ImplementationError,
            f"{kernel.name}: an mla-signature kernel needs a paged case, got {case.name}")
    paged, fmt = case.paged, case.fmt
    kw = {"head_dim_v": int(paged.head_dim_v)}
    if "scale" in kernel.accepts:
        kw["softmax_scale"] = float(case.conventions["scale"])
    if "causal" in kernel.accepts:
        kw["causal"] = bool(case.conventions.get("causal", False))
    result = kernel.fn(convert(storage(paged.q, fmt)), convert(storage(paged.k_cache, fmt)),
                       convert(paged.block_table.astype(np.int32)), convert(paged.cache_seqlens.astype(np.int32)), **kw)
    out, lse, dtype = _split_result(result, kernel.name)
    require(out.ndim == 4, ImplementationError, f"{kernel.name}: expected out of rank 4 (B, s_q, h_q, Dv), got {out.shape}")
    return np.transpose(out, (0, 2, 1, 3)), lse, dtype  # (B, h_q, s_q, Dv); lse is already (B, h_q, s_q)


def _callable_name(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{module}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def _infer_accepts(fn: Callable, signature: str) -> tuple[frozenset, str | None]:
    """Return (accepted conventions, LSE keyword) read from ``fn``'s parameters."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as exc:
        raise ImplementationError(f"impl: cannot read the parameters of {fn!r} ({exc}); "
                                  f"declare them with Kernel(accepts=...) or @declare(accepts=...)") from exc
    names = set(params)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if signature == "attention":
        return (frozenset(CONVENTION_KEYWORDS) if var_kw else frozenset(names & set(CONVENTION_KEYWORDS))), None
    mapping = _FLASH_KEYWORDS if signature == "flash" else _MLA_KEYWORDS
    accepts = frozenset(conv for kw, conv in mapping.items() if kw in names or var_kw)
    lse_keyword = "return_attn_probs" if signature == "flash" and "return_attn_probs" in names else None
    return accepts, lse_keyword


# ----------------------------------------------------------------------------------------------
# Adapters for the common signatures
# ----------------------------------------------------------------------------------------------

def flash_attn_kernel(fn: Callable, *, name: str | None = None, empty_lse: float = np.inf,
                      arrays: Callable[[np.ndarray], Any] | None = None, **declared) -> Kernel:
    """Return a Kernel for a FlashAttention-style ``fn(q, k, v, softmax_scale, causal, ...)``.

    Layout (B, S, H, D); causal bottom-right (FlashAttention >= 2.1); ``window_size`` and
    ``softcap`` are passed when ``fn`` names them; with ``return_attn_probs`` the LSE (the
    second element) is checked. ``empty_lse`` defaults to FA2's +inf; pass ``-inf`` for FA3.
    For a CUDA kernel: ``flash_attn_kernel(flash_attn_func, arrays=torch_arrays("cuda"))``.
    """
    return as_kernel(fn, signature="flash", name=name or _callable_name(fn), empty_lse=empty_lse,
                     arrays=arrays, causal_alignment="bottom_right", **declared)


def sdpa_kernel(fn: Callable, *, name: str | None = None, arrays: Callable[[np.ndarray], Any] | None = None,
                **declared) -> Kernel:
    """Return a Kernel for a PyTorch-SDPA-style ``fn(q, k, v, attn_mask=, is_causal=, scale=)``.

    Layout (B, H, S, D) as attnspec's; ``is_causal`` is top-left aligned (``tril(ones(L, S))``),
    and SDPA forbids ``attn_mask`` together with ``is_causal``, so both are folded into one
    boolean mask the way SDPA's documentation spells ``is_causal``. ``enable_gqa=True`` is
    passed when ``fn`` names it. SDPA returns no LSE.
    """
    try:
        params = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = {"attn_mask", "is_causal", "scale", "enable_gqa"}

    def call(q, k, v, *, scale, causal, mask):
        kw = {"scale": scale}
        if "enable_gqa" in params:
            kw["enable_gqa"] = q.shape[1] != k.shape[1]
        if causal and mask is not None:
            mask = mask & _tril_like(mask, q.shape[2], k.shape[2])
        elif causal:
            kw["is_causal"] = True
        return fn(q, k, v, attn_mask=mask, **kw)

    declared.setdefault("gqa", "enable_gqa" in params)
    return Kernel(fn=call, name=name or _callable_name(fn), signature="attention",
                  accepts=frozenset({"scale", "causal", "mask"}), causal_alignment="top_left", arrays=arrays, **declared)


def _tril_like(mask: Any, sq: int, sk: int) -> Any:
    """Return a top-left causal boolean (Sq, Sk) of ``mask``'s array type, built by the array's own ``tril``."""
    ones = mask.new_ones((sq, sk)) if hasattr(mask, "new_ones") else np.ones((sq, sk), dtype=bool)
    return ones.tril() if hasattr(ones, "tril") else np.tril(ones)


def flash_mla_kernel(fn: Callable, *, get_metadata: Callable | None = None, name: str | None = None,
                     empty_lse: float = np.inf, arrays: Callable[[np.ndarray], Any] | None = None,
                     **declared) -> Kernel:
    """Return a Kernel for FlashMLA's ``flash_mla_with_kvcache`` (deepseek-ai/FlashMLA @ 9241ae3).

    With ``get_metadata`` (FlashMLA's ``get_mla_metadata``) the wrapper computes the tile
    scheduler metadata from ``cache_seqlens`` and passes it positionally, as FlashMLA's
    interface requires; without it, ``fn`` must already have the attnspec mla signature.
    FlashMLA reports LSE +inf for a query with no key and needs (Dk, Dv) = (576, 512).
    """
    if get_metadata is None:
        return as_kernel(fn, signature="mla", name=name or _callable_name(fn), empty_lse=empty_lse, arrays=arrays,
                         **declared)

    def call(q, k_cache, block_table, cache_seqlens, *, head_dim_v, softmax_scale, causal):
        h_kv = k_cache.shape[2]
        metadata, num_splits = get_metadata(cache_seqlens, q.shape[1] * q.shape[2] // h_kv, h_kv)
        return fn(q, k_cache, block_table, cache_seqlens, head_dim_v, metadata, num_splits,
                  softmax_scale=softmax_scale, causal=causal)

    declared.setdefault("head_dims", (576, 512))
    return Kernel(fn=call, name=name or _callable_name(fn), signature="mla", accepts=frozenset({"scale", "causal"}),
                  empty_lse=empty_lse, arrays=arrays, **declared)


# ----------------------------------------------------------------------------------------------
# Peers: real implementations from optional packages
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """A ready-made kernel from an optional package, with the package's version."""

    kernel: Kernel
    package: str
    version: str
    note: str = ""


def torch_sdpa() -> Peer:
    """Return PyTorch's ``scaled_dot_product_attention`` on the CPU as a peer (needs ``torch``).

    Mapping: layout (B, H, S, D) as ours; ``scale`` passed explicitly (SDPA applies sqrt(scale)
    to Q and to K, ``attention.cpp``); causal is top-left; GQA via ``enable_gqa``
    (``repeat_interleave``, our h // G); a fully masked row gives 0 (``_safe_softmax``). No LSE.
    """
    torch = importlib.import_module("torch")
    kernel = sdpa_kernel(torch.nn.functional.scaled_dot_product_attention, name="torch.sdpa(cpu)",
                         arrays=torch_arrays("cpu"), empty_kv=False)
    return Peer(kernel, "torch", torch.__version__)


def _onnx_attention_model(opset: int, q, k, v, conventions: dict, nonpad: bool):
    """Return an ONNX ModelProto with one Attention node for these inputs and conventions."""
    onnx = importlib.import_module("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    elem = {np.dtype(np.float32): tp.FLOAT, np.dtype(np.float16): tp.FLOAT16}[q.dtype]
    attrs: dict[str, Any] = {"scale": float(conventions["scale"]), "is_causal": int(bool(conventions.get("causal")))}
    if conventions.get("softcap"):
        attrs["softcap"] = float(conventions["softcap"])
    window = conventions.get("window")
    if window is not None:
        attrs["left_window_size"] = -1 if window[0] is None else int(window[0])
        attrs["right_window_size"] = -1 if window[1] is None else int(window[1])
    inputs = [helper.make_tensor_value_info(n, elem, list(a.shape)) for n, a in (("Q", q), ("K", k), ("V", v))]
    names = ["Q", "K", "V", "", "", ""]
    if conventions.get("mask") is not None:
        names[3] = "attn_mask"
        inputs.append(helper.make_tensor_value_info("attn_mask", tp.BOOL, list(conventions["mask"].shape)))
    if nonpad:
        names.append("nonpad_kv_seqlen")
        inputs.append(helper.make_tensor_value_info("nonpad_kv_seqlen", tp.INT64, [q.shape[0]]))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node("Attention", names, ["Y"], **attrs)
    graph = helper.make_graph([node], "attention", inputs, [helper.make_tensor_value_info("Y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _onnx_kernel(run: Callable, opset: int, name: str) -> Kernel:
    """Return a Kernel that builds the Attention model for each case and runs it with ``run(model, feeds)``."""
    nonpad = opset >= 24  # nonpad_kv_seqlen makes causal bottom-right per batch and carries kv lengths

    def call(q, k, v, *, scale, causal, softcap=None, mask=None, window=None, kv_seqlens=None):
        conventions = {"scale": scale, "causal": causal, "softcap": softcap, "mask": mask, "window": window}
        feeds = {"Q": q, "K": k, "V": v}
        if mask is not None:
            feeds["attn_mask"] = mask
        if nonpad:
            lengths = np.full(q.shape[0], k.shape[2]) if kv_seqlens is None else np.asarray(kv_seqlens)
            feeds["nonpad_kv_seqlen"] = lengths.astype(np.int64)
            # ONNX masks padding additively (bias -inf), so a NaN past nonpad_kv_seqlen still poisons
            # its row: finite padding is the op's precondition, met here by zeroing it.
            pad = np.arange(k.shape[2])[None, None, :, None] >= lengths[:, None, None, None]
            feeds["K"], feeds["V"] = np.where(pad, 0, k).astype(k.dtype), np.where(pad, 0, v).astype(v.dtype)
        return run(_onnx_attention_model(opset, q, k, v, conventions, nonpad), feeds)

    accepts = {"scale", "causal", "softcap", "mask"} | ({"kv_seqlens"} if nonpad else set()) \
        | ({"window"} if opset >= 25 else set())
    return Kernel(fn=call, name=name, signature="attention", accepts=frozenset(accepts),
                  causal_alignment="bottom_right" if nonpad else "top_left", formats=(Format.FP32, Format.FP16),
                  empty_kv=False)  # ONNX Runtime: "KV sequence length must be greater than 0"


def onnx_reference(opset: int = 25) -> Peer:
    """Return ONNX's reference ``Attention`` (``onnx.reference.ReferenceEvaluator``) as a peer (needs ``onnx``).

    Mapping: Q and K each scaled by sqrt(scale) before the MatMul (``op_attention.py``);
    causal is offset-aware: with ``nonpad_kv_seqlen`` (opset >= 24, always passed here)
    query i of batch b attends key j <= i + nonpad_kv_seqlen[b] - Sq, our bottom-right with
    ``kv_seqlens``; at opset 23 (no cache input) the offset is 0, i.e. top-left. Softcap
    before the mask (onnx/onnx#7867); fully masked rows give 0 (errata of onnx/onnx#8068);
    opset 25 adds left/right windows. No LSE. The reference computes in the input dtype.
    """
    onnx = importlib.import_module("onnx")
    reference = importlib.import_module("onnx.reference")

    def run(model, feeds):
        return reference.ReferenceEvaluator(model).run(None, feeds)[0]

    return Peer(_onnx_kernel(run, opset, f"onnx.reference.Attention-{opset}"), "onnx", onnx.__version__)


def onnxruntime_attention(opset: int = 25) -> Peer:
    """Return ONNX Runtime's CPU ``Attention`` kernel as a peer (needs ``onnx`` and ``onnxruntime``).

    Same model as :func:`onnx_reference`; ONNX Runtime's CPU execution provider implements the
    standard-domain Attention at the opset given (see docs/conformance.md for which opsets a
    release registers).
    """
    ort = importlib.import_module("onnxruntime")
    ort.set_default_logger_severity(3)  # errors reach the harness as exceptions; keep the console quiet

    def run(model, feeds):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]

    return Peer(_onnx_kernel(run, opset, f"onnxruntime.Attention-{opset}(cpu)"), "onnxruntime", ort.__version__)

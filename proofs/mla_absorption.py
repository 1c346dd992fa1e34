"""Absorbed MLA equals naive MLA in exact real arithmetic.

Claim (``spec/mla.py``; DeepSeek-V2, arXiv 2405.04434 §2.1; deepseek-ai/DeepSeek-V3 @ 9b4e978
``MLA.forward``): for every head h, query and key t,

    scores   q_nope^h . (W_UK^h c_t) + q_pe^h . k_pe_t  ==  ((W_UK^h)^T q_nope^h) . c_t + q_pe^h . k_pe_t
    outputs  sum_t P_t (W_UV^h c_t)                     ==  W_UV^h (sum_t P_t c_t)

for all weights P_t. Equal scores give equal softmax weights and an equal LSE (softmax is a
function of the score row, and the scale multiplies both sides), so the first identity makes
the two forms' P and LSE equal, and the second makes their outputs equal, whatever P is.
Both are polynomial identities over the reals, stated on symbolic matrices of small sizes
(several heads, so that a head-index slip is visible) and decided by Z3.

Negative controls: absorbing W_UK without the transpose (square W_UK, so the wrong product
type-checks, as it would in an einsum with equal extents); applying the W_UV of the wrong
head; and a weakened precondition: per-head RoPE keys k_pe^h (what standard RoPE on the
decompressed keys would give) absorbed into the one shared latent key. DeepSeek-V2 §2.1.3
decouples RoPE precisely because that last absorption is impossible. Each counterexample is
replayed in exact rationals with numpy's einsum, independently of the Z3 terms.
"""

from __future__ import annotations

import numpy as np
import z3

from attnspec.proofs._core import ProofResult, prove, theorem
from attnspec.proofs.online_softmax import model_fraction, prove_conjunction

#: (heads, qk_nope, kv_lora_rank, qk_rope, v_head, keys) of the theorem.
DIMS = (2, 2, 3, 2, 2, 2)
#: Square W_UK (qk_nope = kv_lora_rank) for the controls, so that the untransposed product exists.
CONTROL_DIMS = (2, 2, 2, 1, 2, 2)


def _matrix(name: str, *shape: int) -> np.ndarray:
    """Return an object array of Z3 reals named name[i][j]..."""
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = z3.Real(name + "".join(f"_{i}" for i in idx))
    return out


def _dot(a, b):
    return sum((x * y for x, y in zip(a, b)), z3.RealVal(0))


def mla_symbols(dims=DIMS) -> dict[str, np.ndarray]:
    """Return symbolic inputs: q_nope (H, n), q_pe (H, r'), c (T, r), k_pe (T, r') or (H, T, r'), W_UK (H, n, r), W_UV (H, v, r), P (T,)."""
    h, nope, rank, rope, v, keys = dims
    return {"q_nope": _matrix("qn", h, nope), "q_pe": _matrix("qp", h, rope), "c": _matrix("c", keys, rank),
            "k_pe": _matrix("kp", keys, rope), "k_pe_heads": _matrix("kph", h, keys, rope),
            "w_uk": _matrix("wuk", h, nope, rank), "w_uv": _matrix("wuv", h, v, rank), "p": _matrix("p", keys)}


def naive_terms(s: dict, *, per_head_rope: bool = False):
    """Return (scores (H, T), outputs (H, v)): decompress K = [W_UK c ; k_pe], V = W_UV c, then attend."""
    h, _, rank = s["w_uk"].shape
    scores, outputs = np.empty((h, len(s["c"])), dtype=object), np.empty((h, s["w_uv"].shape[1]), dtype=object)
    for i in range(h):
        k_pe = s["k_pe_heads"][i] if per_head_rope else s["k_pe"]
        for t, c in enumerate(s["c"]):
            k_nope = [_dot(row, c) for row in s["w_uk"][i]]  # wkv_b(kv) -> k_nope
            scores[i, t] = _dot(s["q_nope"][i], k_nope) + _dot(s["q_pe"][i], k_pe[t])
        values = [[_dot(row, c) for row in s["w_uv"][i]] for c in s["c"]]  # wkv_b(kv) -> v
        outputs[i] = [sum((p * vt[d] for p, vt in zip(s["p"], values)), z3.RealVal(0)) for d in range(len(values[0]))]
    return scores, outputs


def absorbed_terms(s: dict, *, transpose_uk: bool = True, uv_head_shift: int = 0):
    """Return (scores (H, T), outputs (H, v)): q~ = W_UK^T q_nope, MQA over [c ; k_pe], o = W_UV o~."""
    h, nope, rank = s["w_uk"].shape
    scores, outputs = np.empty((h, len(s["c"])), dtype=object), np.empty((h, s["w_uv"].shape[1]), dtype=object)
    for i in range(h):
        w = s["w_uk"][i]
        if transpose_uk:  # einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :qk_nope_head_dim])
            q_lat = [_dot([w[d, col] for d in range(nope)], s["q_nope"][i]) for col in range(rank)]
        else:  # wrong: W_UK q_nope
            q_lat = [_dot(w[row], s["q_nope"][i]) for row in range(nope)]
        for t, c in enumerate(s["c"]):
            scores[i, t] = _dot(q_lat, c) + _dot(s["q_pe"][i], s["k_pe"][t])
        o_lat = [sum((p * c[col] for p, c in zip(s["p"], s["c"])), z3.RealVal(0)) for col in range(rank)]
        w_uv = s["w_uv"][(i + uv_head_shift) % h]  # einsum("bshc,hdc->bshd", x, wkv_b[:, -v_head_dim:])
        outputs[i] = [_dot(row, o_lat) for row in w_uv]
    return scores, outputs


def _equal(a: np.ndarray, b: np.ndarray) -> z3.BoolRef:
    return z3.And(*[x == y for x, y in zip(a.reshape(-1), b.reshape(-1))])


def confirm_exact(s: dict, mutant: dict):
    """Return a ``confirm`` hook: rebuild the model's matrices as Fractions and compare the two forms with einsum."""

    def confirm(model: z3.ModelRef) -> str:
        v = {k: np.vectorize(lambda x: model_fraction(model, x), otypes=[object])(a) for k, a in s.items()}
        w_uk = v["w_uk"] if mutant.get("transpose_uk", True) else np.swapaxes(v["w_uk"], 1, 2)
        k_pe = v["k_pe_heads"] if mutant.get("per_head_rope") else np.broadcast_to(v["k_pe"], (len(v["w_uk"]),)
                                                                                   + v["k_pe"].shape)
        naive = np.einsum("hn,hnr,tr->ht", v["q_nope"], v["w_uk"], v["c"]) + np.einsum("hk,htk->ht", v["q_pe"], k_pe)
        absorbed = (np.einsum("hr,tr->ht", np.einsum("hn,hnr->hr", v["q_nope"], w_uk), v["c"])
                    + np.einsum("hk,tk->ht", v["q_pe"], v["k_pe"]))
        out_naive = np.einsum("t,hvr,tr->hv", v["p"], v["w_uv"], v["c"])
        w_uv = np.roll(v["w_uv"], -mutant.get("uv_head_shift", 0), axis=0)
        out_absorbed = np.einsum("hvr,r->hv", w_uv, np.einsum("t,tr->r", v["p"], v["c"]))
        gap = max(abs(x) for x in list((naive - absorbed).reshape(-1)) + list((out_naive - out_absorbed).reshape(-1)))
        if gap == 0:
            raise AssertionError(f"mutant {mutant} agrees with the naive form at the model")
        return f"replayed in exact rationals with einsum: forms differ by {float(gap):.6g}"

    return confirm


@theorem("mla_absorption.equivalence")
def prove_mla_absorption_equivalence() -> ProofResult:
    # DeepSeek-V3 MLA.forward, absorb branch:
    #   q_nope = torch.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :self.qk_nope_head_dim])
    #   x = torch.einsum("bshc,hdc->bshd", x, wkv_b[:, -self.v_head_dim:])
    s = mla_symbols()
    naive_s, naive_o = naive_terms(s)
    abs_s, abs_o = absorbed_terms(s)
    return prove_conjunction("mla_absorption.equivalence", [("scores", _equal(naive_s, abs_s), []),
                                                            ("outputs", _equal(naive_o, abs_o), [])],
                             statement="naive and absorbed MLA have equal scores and equal outputs for all weights "
                                       f"P, symbolic (heads, nope, rank, rope, v, keys) = {DIMS}")


def refute_absorption(name: str, statement: str, **mutant) -> ProofResult:
    """Return the (expected refuted) claim that a mutated absorbed form equals the naive form."""
    s = mla_symbols(CONTROL_DIMS)
    naive_s, naive_o = naive_terms(s, per_head_rope=mutant.get("per_head_rope", False))
    abs_s, abs_o = absorbed_terms(s, transpose_uk=mutant.get("transpose_uk", True),
                                  uv_head_shift=mutant.get("uv_head_shift", 0))
    return prove(name, z3.And(_equal(naive_s, abs_s), _equal(naive_o, abs_o)), expect="refuted",
                 statement=statement, confirm=confirm_exact(s, mutant))


@theorem("mla_absorption.control.no_transpose")
def prove_mla_absorption_control_no_transpose() -> ProofResult:
    # wrong: einsum("bshd,hcd->bshc", ...)  i.e. q~ = W_UK q_nope
    return refute_absorption("mla_absorption.control.no_transpose", "absorbing W_UK without the transpose",
                             transpose_uk=False)


@theorem("mla_absorption.control.wrong_head_uv")
def prove_mla_absorption_control_wrong_head_uv() -> ProofResult:
    # wrong: o^h = W_UV^(h+1) o~^h
    return refute_absorption("mla_absorption.control.wrong_head_uv", "applying the next head's W_UV",
                             uv_head_shift=1)


@theorem("mla_absorption.control.per_head_rope_key")
def prove_mla_absorption_control_per_head_rope_key() -> ProofResult:
    # precondition dropped: k_pe is shared by all heads (wkv_a emits one qk_rope_head_dim key per token)
    return refute_absorption("mla_absorption.control.per_head_rope_key",
                             "absorption with per-head RoPE keys k_pe^h folded into one shared latent key",
                             per_head_rope=True)


"""T4: in exact arithmetic ideal AMLA keeps O_i = (2^{n_i} / c_i) sum_{j<=i} exp(S_j) V_j and outputs softmax attention.

Claim (``spec/amla.py``, variant ``ideal``; AMLA §3.2-3.5): per row, with m_i the running max,
n_i any integer, r_i = exp(m_i + n_i ln 2) = e^{m_i} 2^{n_i}, r^_i any positive number (the
kernel's BF16 rounding of r_i) and c_i = r_i / r^_i, the recurrence

    P  = exp(S - m_i);  l_i = exp(m_{i-1} - m_i) l_{i-1} + rowsum P       SoftmaxFlashV2
    P~ = P r^_i                                                            (no BF16 cast: exact arithmetic)
    O_i = O_{i-1} 2^{n_i - n_{i-1}} c_{i-1} / c_i + P~ V_i                  [variant: ideal]
    out = O_T / (l_T r^_T)

keeps O_i c_i = 2^{n_i} A_i and l_i e^{m_i} = Z_i >= e^{m_i}, with Z_i = sum e^{S_j} and
A_i = sum e^{S_j} V_j over the keys so far, and out = A_T / Z_T.

Reduction to rational arithmetic, as in ``proofs/online_softmax.py``: with E = e^m and
e_j = e^{S_j} >= 0, exp(S_j - m) = e_j / E, exp(m_{i-1} - m_i) = E_{i-1} / E_i and r = E 2^n;
2^n is any positive real W. Each division is stated as a product (q d = n), so nlsat sees
polynomials. One step on a symbolic block (1 to 3 keys, 2 value columns) from a state
satisfying the invariant keeps it; the first block is the step from the zero state
(E = l = O = 0); the finalisation turns the invariant into out = A / Z. So it holds for
any number of blocks.

Negative controls (a deliberately wrong algorithm each): the rescale without c_{i-1}/c_i
(``spec.amla`` with the compensation dropped, in exact arithmetic), the rescale clamped at
2^-30 as the kernel clamps dn, and a final division by l_T instead of l_T r^_T.
"""

from __future__ import annotations

import z3

from attnspec.proofs._core import ProofResult, prove, theorem
from attnspec.proofs.online_softmax import maximum, prove_conjunction

WIDTH = 2
BLOCK_SIZES = (1, 2, 3)
RESCALES = ("ideal", "no_compensation", "clamped")


def invariant(O, l, E, W, c, Z, A) -> z3.BoolRef:
    """Return I: O c = W A (W = 2^n), l E = Z, with Z >= E >= 0 (the max key is a key so far) and W, c > 0."""
    return z3.And(E >= 0, W > 0, c > 0, Z >= E, l * E == Z, *[o * c == W * a for o, a in zip(O, A)])


def state(prefix: str):
    O = [z3.Real(f"{prefix}O{d}") for d in range(WIDTH)]
    A = [z3.Real(f"{prefix}A{d}") for d in range(WIDTH)]
    l, E, W, c, Z = z3.Reals(f"{prefix}l {prefix}E {prefix}W {prefix}c {prefix}Z")
    return O, l, E, W, c, Z, A


def step_part(keys: int, rescale: str = "ideal") -> tuple[str, z3.BoolRef, list[z3.BoolRef]]:
    """Return (label, invariant after one block, assumptions) for a block of ``keys`` keys."""
    O, l, E, W, c, Z, A = state("s")
    es = [z3.Real(f"e{j}") for j in range(keys)]
    vs = [[z3.Real(f"v{j}_{d}") for d in range(WIDTH)] for j in range(keys)]
    E1, W1, r_hat, c1, l1, alpha = z3.Reals("E1 W1 r_hat c1 l1 alpha")
    ps = [z3.Real(f"p{j}") for j in range(keys)]
    O1 = [z3.Real(f"O1_{d}") for d in range(WIDTH)]
    defs = [E1 == maximum(E, *es), E1 > 0,  # m_i = max(m_{i-1}, rowmax S); some key admitted so far
            alpha * E1 == E, *[p * E1 == e for p, e in zip(ps, es)],  # exp(m_{i-1} - m_i), exp(S - m_i)
            l1 == alpha * l + sum(ps),
            W1 > 0, r_hat > 0, c1 * r_hat == E1 * W1]  # r = e^m 2^n; c = r / r^
    factor_num, factor_den = W1 * c, W * c1  # 2^{n_i - n_{i-1}} c_{i-1} / c_i
    if rescale == "no_compensation":
        factor_num, factor_den = W1, W
    for d in range(WIDTH):
        fresh = sum(p * r_hat * v[d] for p, v in zip(ps, vs))  # P~ V with P~ = P r^
        if rescale == "clamped":  # O <- O max(2^dn, 2^-30) c_{i-1}/c_i
            clamped = z3.If(W1 * 2**30 >= W, factor_num, W * c / 2**30)
            defs.append(O1[d] * factor_den == O[d] * clamped + fresh * factor_den)
        else:
            defs.append(O1[d] * factor_den == O[d] * factor_num + fresh * factor_den)
    Z1 = Z + sum(es)
    A1 = [a + sum(e * v[d] for e, v in zip(es, vs)) for d, a in enumerate(A)]
    assumptions = [invariant(O, l, E, W, c, Z, A)] + [e >= 0 for e in es] + defs
    return f"step{keys}", invariant(O1, l1, E1, W1, c1, Z1, A1), assumptions


def final_part(divide_by_l_only: bool = False) -> tuple[str, z3.BoolRef, list[z3.BoolRef]]:
    """Return (label, out = A / Z, assumptions) for out = O_T / (l_T r^_T)."""
    O, l, E, W, c, Z, A = state("T")
    r_hat = z3.Real("r_hat_T")
    denominator = l if divide_by_l_only else l * r_hat
    assumptions = [invariant(O, l, E, W, c, Z, A), E > 0, r_hat > 0, c * r_hat == E * W]
    claim = z3.And(denominator != 0, *[o * Z == a * denominator for o, a in zip(O, A)])
    return "final", claim, assumptions


@theorem("amla.invariant")
def prove_amla_invariant() -> ProofResult:
    # spec/amla.py amla_step:  factor = np.exp2(n - n_prev) * (c_prev / c)  # [variant: ideal]
    #                          o = policy.to_accumulate(o + _group_matmul(p_tilde, v, policy))
    parts = [step_part(keys) for keys in BLOCK_SIZES] + [final_part()]
    return prove_conjunction("amla.invariant", parts,
                             statement="ideal AMLA in exact arithmetic: O c = 2^n A and l e^m = Z are kept by one "
                                       f"block of {BLOCK_SIZES} keys (any n_i, any r^_i > 0; the first block is the "
                                       "step from zero), and out = O_T / (l_T r^_T) = A / Z, softmax attention")


def _control(name: str, part, statement: str) -> ProofResult:
    label, claim, assumptions = part
    return prove(name, claim, assumptions, expect="refuted", statement=f"{statement} ({label})")


@theorem("amla.invariant.control.no_compensation")
def prove_amla_invariant_control_no_compensation() -> ProofResult:
    # wrong: O <- O 2^{n_i - n_{i-1}} + P~ V  (c_{i-1}/c_i dropped while P~ carries r^_i)
    return _control("amla.invariant.control.no_compensation", step_part(1, "no_compensation"),
                    "the invariant is kept when the rescale drops c_{i-1}/c_i")


@theorem("amla.invariant.control.clamped")
def prove_amla_invariant_control_clamped() -> ProofResult:
    # the kernel's clamp in exact arithmetic: O <- O max(2^dn, 2^-30) c_{i-1}/c_i
    return _control("amla.invariant.control.clamped", step_part(1, "clamped"),
                    "the invariant is kept when 2^dn is clamped at 2^-30")


@theorem("amla.invariant.control.divide_by_l")
def prove_amla_invariant_control_divide_by_l() -> ProofResult:
    # wrong: out = O_T / l_T  (c29bc10 divides by aMlaSum = l_T r^_T)
    return _control("amla.invariant.control.divide_by_l", final_part(divide_by_l_only=True),
                    "out = O_T / l_T is softmax attention")

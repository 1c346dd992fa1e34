"""The algebraic lemmas behind PASA's overflow bounds, over the reals, symbolic in b, A, beta.

Box model: every entry of q lies in [b_q - A_q, b_q + A_q] (|q| <= Q), every entry of k in
[b - A, b + A], |v| <= V. The stored shift matrix is M~ = a I - b' J (J = 1 1^T): the exact
c (I - (beta/n) J) has a = c, b' = c beta/n. These lemmas are the links of the certificate in
``reference/pasa_bounds.py``; the rounding links are ``proofs/pasa_fp16.py``.

- ``pasa.overflow.shift_bound``: |(M~ k)_t| <= |a - n b'| |b| + (|a - b'| + (n-1)|b'|) A, for
  symbolic n, via the mean of the other n - 1 keys (a convex combination, so in the box).
  ``pasa()``: "temp_K = temp_K.permute(0, 1, 3, 2) @ M".
- ``pasa.overflow.shift_bound_closed_form``: for the exact M this is
  c [(1 - beta)|b| + (1 + beta - 2 beta/n) A]: the brief's formula for |k'|, so with
  ``dot_bound`` |S'| <= c d (|b_q| + A_q) [(1 - beta)|b| + (1 + beta - 2 beta/n) A] (confirmed).
- ``pasa.overflow.dot_bound``: the induction step |s + q k| <= (i+1) Q K from |s| <= i Q K,
  so a d-term dot product is at most d Q K for every d.
- ``pasa.overflow.offset_bound``: Delta = gamma (r'_j - R_j) with r'_t = (1-beta) c q.kbar_t
  and R_j the mean of r'_0..r'_j is at most 2 beta A c Q per dimension (j = 2): the bias
  cancels, so |Delta| <= 2 beta A c d (|b_q| + A_q) (the brief's formula, confirmed).
  Control: gamma r'_j on its own ("forming gamma r' before subtracting R") is not bounded by it.
- ``pasa.overflow.rebase_identity``: R_{j-1} - R_j = (R_{j-1} - r_j)/(j+1), so
  |delta_j| <= 2 beta A c d (|b_q| + A_q)/(j+1) (confirmed).
- ``pasa.overflow.reference_error``: the error recursion of the rounded running reference.
- ``pasa.overflow.telescoping_errors``: the running max carried from block t to T equals
  m~_t + gamma (r_t - R_T) plus the rounding errors of each Delta, delta and addition.
- ``pasa.overflow.max_commutes``: a non-decreasing g (rounding after adding delta,
  ``proofs/pasa_fp16.py`` rounding_monotone) satisfies g(max(x, y)) = max(g(x), g(y)), so the
  running max fl(max(...) + delta) is the max of the individually re-based candidates.
- ``pasa.overflow.state_bounds``: rescale factors in [0, 1] keep l <= number of keys and
  |O| <= l V; a factor equal to 1 on the maximal candidate keeps l >= 1.
- ``pasa.overflow.naive_certain``: with |b| > A every product q_c k_c >= (|b| - A)^2 > 0, so
  naive FA's |q.k| >= d (|b| - A)^2 for every input: where that reaches 65520 it always
  overflows (the bound |q.k| <= d (|b| + A)^2 is attained at q = k = b + A).
Every lemma has a negative control (drop or weaken one precondition).
"""

from __future__ import annotations

import z3

from attnspec.proofs._core import ProofResult, prove, theorem


def _in_box(x, bias, amp):
    return z3.And(x >= bias - amp, x <= bias + amp)


def _shift_bound(a, b_off, n, bias, amp):
    """Return |a - n b'| |b| + (|a - b'| + (n-1)|b'|) A: the bound on (M~ k)_t for k in the box."""
    return z3.Abs(a - n * b_off) * z3.Abs(bias) + (z3.Abs(a - b_off) + (n - 1) * z3.Abs(b_off)) * amp


def _shift(in_box_t: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    a, b_off, n, bias, amp, k_t, k_rest = z3.Reals("a b_off n bias amp k_t k_rest")
    x = a * k_t - b_off * (k_t + (n - 1) * k_rest)  # (M~ k)_t, k_rest = mean of the other n - 1 keys
    assumptions = [n >= 1, amp >= 0, _in_box(k_rest, bias, amp)]
    if in_box_t:
        assumptions.append(_in_box(k_t, bias, amp))
    return z3.Abs(x) <= _shift_bound(a, b_off, n, bias, amp), assumptions


@theorem("pasa.overflow.shift_bound")
def prove_pasa_overflow_shift_bound() -> ProofResult:
    """Return the proof of the bound on a shifted key entry for any stored a, b' and block length n."""
    claim, assumptions = _shift(True)
    return prove("pasa.overflow.shift_bound", claim, assumptions,
                 statement="k in box => |a k_t - b' sum_s k_s| <= |a - n b'||b| + (|a - b'| + (n-1)|b'|) A")


@theorem("pasa.overflow.shift_bound.control_padding")
def prove_pasa_overflow_control_padding() -> ProofResult:
    """Return the counterexample when one key leaves the box (pasa()'s zero padding when Sk < n)."""
    claim, assumptions = _shift(False)
    return prove("pasa.overflow.shift_bound.control_padding", claim, assumptions, expect="refuted",
                 statement="a key outside the box (a zero pad row) breaks the bound")


def _closed_form(beta_below_one: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    a, b_off, n, c, beta, bias, amp = z3.Reals("a b_off n c beta bias amp")
    # n * closed form = c[(1-beta)|b| n + (n + beta n - 2 beta) A], i.e. the brief's formula times n
    claim = n * _shift_bound(a, b_off, n, bias, amp) == c * ((1 - beta) * z3.Abs(bias) * n
                                                             + (n + beta * n - 2 * beta) * amp)
    assumptions = [a == c, b_off * n == c * beta, n >= 1, c > 0, beta >= 0, amp >= 0]
    return claim, assumptions + ([beta < 1] if beta_below_one else [])


@theorem("pasa.overflow.shift_bound_closed_form")
def prove_pasa_overflow_shift_bound_closed_form() -> ProofResult:
    """Return the proof that the bound is c[(1-beta)|b| + (1+beta-2beta/n)A] for the exact M."""
    claim, assumptions = _closed_form(True)
    return prove("pasa.overflow.shift_bound_closed_form", claim, assumptions,
                 statement="a = c, b' = c beta/n => bound = c[(1-beta)|b| + (1+beta-2beta/n)A]")


@theorem("pasa.overflow.shift_bound_closed_form.control")
def prove_pasa_overflow_control_closed_form() -> ProofResult:
    """Return the counterexample for the closed form with beta > 1 allowed (1 - beta/n < 0 flips a sign)."""
    claim, assumptions = _closed_form(False)
    return prove("pasa.overflow.shift_bound_closed_form.control", claim, assumptions, expect="refuted",
                 statement="without beta < 1 the closed form is wrong")


def _dot(bounded_q: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    s, q, k, big_q, big_k, i = z3.Reals("s q k Q K i")
    assumptions = [i >= 0, big_k >= 0, big_q >= 0, z3.Abs(s) <= i * big_q * big_k, z3.Abs(k) <= big_k]
    if bounded_q:
        assumptions.append(z3.Abs(q) <= big_q)
    return z3.Abs(s + q * k) <= (i + 1) * big_q * big_k, assumptions


@theorem("pasa.overflow.dot_bound")
def prove_pasa_overflow_dot_bound() -> ProofResult:
    """Return the induction step of |q.k'| <= d Q K."""
    claim, assumptions = _dot(True)
    return prove("pasa.overflow.dot_bound", claim, assumptions,
                 statement="|s| <= i Q K, |q| <= Q, |k| <= K => |s + q k| <= (i+1) Q K")


@theorem("pasa.overflow.dot_bound.control")
def prove_pasa_overflow_control_dot() -> ProofResult:
    """Return the counterexample with q unbounded."""
    claim, assumptions = _dot(False)
    return prove("pasa.overflow.dot_bound.control", claim, assumptions, expect="refuted",
                 statement="without |q| <= Q the step fails")


def _offset(alone: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    beta, gamma, c, q, bias, amp = z3.Reals("beta gamma c q bias amp")
    kbar = z3.Reals("kbar0 kbar1 kbar2")  # block means of k, one dimension
    r = [(1 - beta) * c * q * kb for kb in kbar]  # r'_t = (1 - beta) c q.kbar_t
    r_bar = (r[0] + r[1] + r[2]) / 3  # the running mean after block j = 2
    value = gamma * r[2] if alone else gamma * (r[2] - r_bar)
    assumptions = [beta >= 0, beta < 1, gamma * (1 - beta) == beta, c > 0, amp >= 0,
                   _in_box(q, bias, amp)] + [_in_box(kb, bias, amp) for kb in kbar]
    return z3.Abs(value) <= 2 * beta * amp * c * (z3.Abs(bias) + amp), assumptions


@theorem("pasa.overflow.offset_bound")
def prove_pasa_overflow_offset_bound() -> ProofResult:
    """Return the proof that Delta = gamma (r'_j - R_j) <= 2 beta A c (|b| + A) per dimension."""
    claim, assumptions = _offset(False)
    return prove("pasa.overflow.offset_bound", claim, assumptions,
                 statement="|gamma (r'_2 - mean(r'_0..2))| <= 2 beta A c (|b| + A), one dimension")


@theorem("pasa.overflow.offset_bound.control_gamma_r_first")
def prove_pasa_overflow_control_gamma_r_first() -> ProofResult:
    """Return the counterexample for gamma r' formed on its own (it carries beta c q.kbar ~ c b^2)."""
    claim, assumptions = _offset(True)
    return prove("pasa.overflow.offset_bound.control_gamma_r_first", claim, assumptions, expect="refuted",
                 statement="|gamma r'_2| is not bounded by 2 beta A c (|b| + A)")


def _rebase(divisor_is_j_plus_1: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    j, r_old, r_new, r = z3.Reals("j R_old R_new r")
    divisor = j + 1 if divisor_is_j_plus_1 else j
    return (r_old - r_new) * divisor == r_old - r, [j >= 1, r_new * (j + 1) == j * r_old + r]


@theorem("pasa.overflow.rebase_identity")
def prove_pasa_overflow_rebase_identity() -> ProofResult:
    """Return the proof that R_{j-1} - R_j = (R_{j-1} - r_j)/(j+1) for the running mean."""
    claim, assumptions = _rebase(True)
    return prove("pasa.overflow.rebase_identity", claim, assumptions,
                 statement="R_j = (j R_{j-1} + r_j)/(j+1) => R_{j-1} - R_j = (R_{j-1} - r_j)/(j+1)")


@theorem("pasa.overflow.rebase_identity.control")
def prove_pasa_overflow_control_rebase() -> ProofResult:
    """Return the counterexample for the divisor j instead of j + 1."""
    claim, assumptions = _rebase(False)
    return prove("pasa.overflow.rebase_identity.control", claim, assumptions, expect="refuted",
                 statement="R_{j-1} - R_j = (R_{j-1} - r_j)/j is wrong")


def _reference_error(with_weight_error: bool) -> list[tuple[str, z3.BoolRef, list[z3.BoolRef]]]:
    """Return the parts of the reference-error lemma: product bounds, then one linear triangle step.

    With a1 = 1/(j+1), a2 = j/(j+1) = 1 - a1, the exact reference R* = a1 r* + a2 R_old*, and
    w1 r = a1 r* + a1 (r - r*) + (w1 - a1) r (likewise for w2 R_old). Every product is named
    (Y, T, U and their bounds TB, UB); the nonlinear parts prove the names' facts from their
    definitions, and the triangle step is linear in the names. nlsat decides each part at
    once, where the whole conjunction takes it half a minute.
    """
    a1, w1, w2, r, rs, ro, ros, e_r, e_o, rb, ob = z3.Reals("a1 w1 w2 r r_star R_old R_old_star E_r E_old r_B R_B")
    y1, y2, t1, t2, u1, u2 = z3.Reals("Y1 Y2 T1 T2 U1 U2")  # a1 r*, a2 R_old*, a1 (r - r*), ..., (w1 - a1) r, ...
    tb1, tb2, ub1, ub2 = z3.Reals("TB1 TB2 UB1 UB2")  # a1 E_r, a2 E_old, |w1 - a1| r_B, |w2 - a2| R_B
    h1, h2, h3, p1, p2, out = z3.Reals("h1 h2 h3 p1 p2 R")
    a2 = 1 - a1
    defs = [y1 == a1 * rs, y2 == a2 * ros, t1 == a1 * (r - rs), t2 == a2 * (ro - ros), u1 == (w1 - a1) * r,
            u2 == (w2 - a2) * ro, tb1 == a1 * e_r, tb2 == a2 * e_o, ub1 == z3.Abs(w1 - a1) * rb,
            ub2 == z3.Abs(w2 - a2) * ob]
    weights = [a1 > 0, a1 <= 1]
    facts = [z3.Abs(t1) <= tb1, z3.Abs(t2) <= tb2, z3.Abs(u1) <= ub1, z3.Abs(u2) <= ub2]
    rounding = [z3.Abs(p1 - (y1 + t1 + u1)) <= h1, z3.Abs(p2 - (y2 + t2 + u2)) <= h2, z3.Abs(out - (p1 + p2)) <= h3]
    bound = tb2 + tb1 + h1 + h2 + h3 + ((ub1 + ub2) if with_weight_error else 0)
    return [("w1 r = a1 r* + T1 + U1", z3.And(w1 * r == y1 + t1 + u1, w2 * ro == y2 + t2 + u2), defs),
            ("|a1 (r - r*)| <= a1 E_r", facts[0], weights + defs + [z3.Abs(r - rs) <= e_r]),
            ("|a2 (R_old - R_old*)| <= a2 E_old", facts[1], weights + defs + [z3.Abs(ro - ros) <= e_o]),
            ("|(w1 - a1) r| <= |w1 - a1| r_B", facts[2], defs + [z3.Abs(r) <= rb]),
            ("|(w2 - a2) R_old| <= |w2 - a2| R_B", facts[3], defs + [z3.Abs(ro) <= ob]),
            ("triangle", z3.Abs(out - (y1 + y2)) <= bound, facts + rounding)]


def _prove_parts(name: str, parts, *, statement: str, expect: str = "proved") -> ProofResult:
    """Return one ProofResult for several parts: proved iff every part is, refuted iff one is."""
    results = [prove(f"{name}[{label}]", claim, assumptions, statement=label, expect=expect)
               for label, claim, assumptions in parts]
    seconds = sum(r.seconds for r in results)
    bad = next((r for r in results if r.status != "proved"), None)
    if bad is None:
        return ProofResult(name, statement, expect, "proved", seconds, note=f"{len(parts)} parts")
    return ProofResult(name, statement, expect, bad.status, seconds, counterexample=bad.counterexample,
                       reason=bad.reason, note=f"part {bad.name}")


@theorem("pasa.overflow.reference_error")
def prove_pasa_overflow_reference_error() -> ProofResult:
    """Return the proof of the error recursion E_R(j) of the rounded running reference."""
    return _prove_parts("pasa.overflow.reference_error", _reference_error(True),
                        statement="R = fl(fl(r w1) + fl(R_old w2)): |R - R*| <= (j E_old + E_r)/(j+1) "
                                  "+ |w1 - 1/(j+1)| r_B + |w2 - j/(j+1)| R_B + three rounding errors")


@theorem("pasa.overflow.reference_error.control")
def prove_pasa_overflow_control_reference_error() -> ProofResult:
    """Return the counterexample when the rounded weights are taken as exact (they need not sum to 1)."""
    label, claim, assumptions = _reference_error(False)[-1]
    return prove("pasa.overflow.reference_error.control", claim, assumptions, expect="refuted",
                 statement="ignoring |w - exact weight| breaks the recursion")


def _telescoping(with_errors: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    gamma, m_loc, r_t = z3.Reals("gamma m_loc r_t")
    refs = z3.Reals("R0 R1 R2")  # R_t, R_{t+1}, R_{t+2}: the stored references
    errs = z3.Reals("eta0 eta1 eta2 rho0 rho1 rho2")
    bounds = z3.Reals("H0 H1 H2 K0 K1 K2")
    cand = m_loc + gamma * (r_t - refs[0]) + errs[0] + errs[3]  # fl(m~ + fl(gamma (r - R))) and its two roundings
    for i in (1, 2):  # fl(c + fl(gamma (R_{i-1} - R_i))): delta's rounding eta_i, the addition's rho_i
        cand = cand + gamma * (refs[i - 1] - refs[i]) + errs[i] + errs[3 + i]
    total = sum(bounds) if with_errors else 0
    assumptions = [z3.Abs(e) <= h for e, h in zip(errs, bounds)]
    return z3.Abs(cand - (m_loc + gamma * (r_t - refs[2]))) <= total, assumptions


@theorem("pasa.overflow.telescoping_errors")
def prove_pasa_overflow_telescoping_errors() -> ProofResult:
    """Return the proof that a candidate carried over two rebases is m~ + gamma (r_t - R_T) within the summed errors."""
    claim, assumptions = _telescoping(True)
    return prove("pasa.overflow.telescoping_errors", claim, assumptions,
                 statement="m~ + Delta_t + delta_{t+1} + delta_{t+2} = m~ + gamma (r_t - R_{t+2}) + sum of roundings")


@theorem("pasa.overflow.telescoping_errors.control")
def prove_pasa_overflow_control_telescoping() -> ProofResult:
    """Return the counterexample when the rounding errors are ignored."""
    claim, assumptions = _telescoping(False)
    return prove("pasa.overflow.telescoping_errors.control", claim, assumptions, expect="refuted",
                 statement="the telescoped candidate is not exact once Delta, delta and m + delta round")


def _max_commutes(monotone: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    g = z3.Function("g", z3.RealSort(), z3.RealSort())
    x, y = z3.Reals("x y")
    order = [z3.Implies(x <= y, g(x) <= g(y)), z3.Implies(y <= x, g(y) <= g(x))]
    if not monotone:  # order reversing instead, e.g. delta - max(x, y)
        order = [z3.Implies(x <= y, g(x) >= g(y)), z3.Implies(y <= x, g(y) >= g(x))]
    big = z3.If(x >= y, x, y)
    return g(big) == z3.If(g(x) >= g(y), g(x), g(y)), order


@theorem("pasa.overflow.max_commutes")
def prove_pasa_overflow_max_commutes() -> ProofResult:
    """Return the proof that a non-decreasing map commutes with max."""
    claim, assumptions = _max_commutes(True)
    return prove("pasa.overflow.max_commutes", claim, assumptions,
                 statement="g non-decreasing => g(max(x, y)) = max(g(x), g(y))")


@theorem("pasa.overflow.max_commutes.control")
def prove_pasa_overflow_control_max_commutes() -> ProofResult:
    """Return the counterexample for an order-reversing map."""
    claim, assumptions = _max_commutes(False)
    return prove("pasa.overflow.max_commutes.control", claim, assumptions, expect="refuted",
                 statement="an order-reversing g does not commute with max")


def _state(factor_max: int) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    e1, e2, l, l_loc, big_l, n_j, o, pv, v = z3.Reals("e_old e_new l l_loc L n_j O PV V")
    l_new = e1 * l + e2 * l_loc
    o_new = e1 * o + e2 * pv
    assumptions = [e1 >= 0, e1 <= factor_max, e2 >= 0, e2 <= 1, l >= 0, l <= big_l, l_loc >= 0, l_loc <= n_j,
                   z3.Abs(o) <= l * v, z3.Abs(pv) <= l_loc * v, v >= 0,
                   z3.Or(z3.And(e1 == 1, l >= 1), z3.And(e2 == 1, l_loc >= 1))]  # the maximal candidate's factor
    claim = z3.And(l_new <= big_l + n_j, z3.Abs(o_new) <= l_new * v, l_new >= 1)
    return claim, assumptions


@theorem("pasa.overflow.state_bounds")
def prove_pasa_overflow_state_bounds() -> ProofResult:
    """Return the proof that factors in [0, 1] keep l <= keys so far, |O| <= l V and l >= 1."""
    claim, assumptions = _state(1)
    return prove("pasa.overflow.state_bounds", claim, assumptions,
                 statement="e in [0,1], one factor 1 on a part with l >= 1 => l' <= L + n_j, |O'| <= l' V, l' >= 1")


@theorem("pasa.overflow.state_bounds.control_positive_exponent")
def prove_pasa_overflow_control_positive_exponent() -> ProofResult:
    """Return the counterexample when a factor may exceed 1 (pasa()'s exponent ordering, deviation 3)."""
    claim, assumptions = _state(2)
    return prove("pasa.overflow.state_bounds.control_positive_exponent", claim, assumptions, expect="refuted",
                 statement="a rescale factor above 1 breaks l <= number of keys")


def _naive(gap: bool) -> tuple[z3.BoolRef, list[z3.BoolRef]]:
    bias, amp = z3.Reals("bias amp")
    q = z3.Reals("q0 q1 q2")
    k = z3.Reals("k0 k1 k2")
    dot = sum(x * y for x, y in zip(q, k))
    assumptions = [amp >= 0] + [_in_box(x, bias, amp) for x in q + k]
    if gap:
        assumptions.append(z3.Abs(bias) > amp)
    return dot >= 3 * (z3.Abs(bias) - amp) * (z3.Abs(bias) - amp), assumptions


@theorem("pasa.overflow.naive_certain")
def prove_pasa_overflow_naive_certain() -> ProofResult:
    """Return the proof that naive |q.k| >= d (|b| - A)^2 for every input when |b| > A (d = 3)."""
    claim, assumptions = _naive(True)
    return prove("pasa.overflow.naive_certain", claim, assumptions,
                 statement="|b| > A, q, k in box => q.k >= d (|b| - A)^2 (d = 3)")


@theorem("pasa.overflow.naive_certain.control")
def prove_pasa_overflow_control_naive() -> ProofResult:
    """Return the counterexample when the box contains 0."""
    claim, assumptions = _naive(False)
    return prove("pasa.overflow.naive_certain.control", claim, assumptions, expect="refuted",
                 statement="with |b| <= A, q = 0 is in the box and q.k = 0")

"""The PASA paper's random benchmark as a command: ``attnspec report pasa-grid``.

Source: Cheng et al., arXiv:2503.01873, and the author's script chenglong92/PASA@14f5c6f
``PASA_Verification.py`` (``gendata``, ``__main__``): inputs U(b - A, b + A) with bias
b in {0, 10, 20, 30} and amplitude A in {0.5, 5, 10, 20} ("distribution 0"), and
N(b, 1) + N(0, Am) Bernoulli(0.001) with Am = 10 ("distribution 1", FlashAttention-3's
outliers); generated in FP32 and stored as BF16 (``InputDtype``); 28 query heads, 4 kv heads,
d = 128, S1 = S2 = 1280 + 127 = 1407 (``--full``). The inputs are built by
``reference.cases`` (family ``pasa_bias``) from numpy's generator with the script's seed
2024724, so they follow the script's distributions, not its exact numbers.

Columns, each a spec evaluation of the same BF16 inputs:

===================  ===========================================================================
fa_fp32              spec.flash, every value FP32 (the paper's golden is an FP32 numpy softmax)
fa_fp16              spec.flash, every value FP16: Q K^T is stored in FP16 before the scale
fa_fp16_scale_q      the same with the scale folded into Q first (fl16(fl16(q) / sqrt(d)), scale 1)
fa_bf16              spec.flash, every value BF16
pasa_b<beta>         spec.pasa, PASA_ATTNSPEC with that beta, POLICY_PASA_FP16 (one per --beta)
pasa_author          spec.pasa, PASA_AUTHOR (beta 0.984497, scale folded into M, m from -60000)
===================  ===========================================================================

Metrics (the script's ``RMSE`` and ``RMSE_PASA_Re``): RMSE = sqrt(mean((out - gold)^2)) over
every output element, and RMSE / RMS(V). The gold is ``reference.certified`` (the certified
float64 substitute of the mpmath oracle): for every element it returns a float64 value and
a rigorous radius around the exact value of the definition. Decision (2026-11-28): the
enclosure's midpoint instead of the mpmath oracle itself, which is too slow for 10^8 score
entries. Each row of the report records the largest radius relative to RMS(V) (at most 6e-10
on the default grid) and the margin, the smallest relative RMSE of the cell divided by it
(at least 300 on the default grid). An RMSE less than :data:`GOLD_MARGIN` times the radius
is below what the gold resolves: it is marked unresolved (printed as "<" that limit) and
left out of the margin.

Overflow map: a column overflows in a cell when its output holds Inf or NaN (for PASA, when any
traced stored quantity does). The report checks it against the bounds of
``reference/pasa_bounds.py`` (exit status 1 if a claim fails; the check
``pasa.grid.overflow_map`` runs the same claims on a small grid):

1. FP16 FA overflows only where the box allows it (``possible``: d (|b| + A)^2 >= 65520),
   always where the box forces it (``certain``: |b| > A and d (|b| - A)^2 >= 65520), and
   exactly where the data's own FP16 Q K^T holds an Inf (the first GEMM is the only cause).
2. PASA never overflows, for every beta; where the certificate of ``reference/pasa_bounds.py``
   holds (it need not: N_kv |v| >= 65520 at b = 30, A = 20 with S = 1407), every traced
   magnitude is within its certified bound.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from attnspec.reference.certified import certified_from_problem
from attnspec.reference.cases import PASA_AMPLITUDES, PASA_BIASES, build_case
from attnspec.reference.pasa_bounds import Box, naive_fa_overflow, pasa_certificate
from attnspec.registry import Outcome, check, tool
from attnspec.spec.errors import DomainError, require
from attnspec.spec.flash import flash_from_problem
from attnspec.spec.formats import Format, round_to
from attnspec.spec.pasa import PASA_ATTNSPEC, PASA_AUTHOR, POLICY_PASA_FP16, PasaConfig, pasa_from_problem
from attnspec.spec.pasa_beta import fixed_point
from attnspec.spec.policy import PrecisionPolicy, matmul_rounded
from attnspec.spec.problem import AttentionProblem, attention_problem

SEED = 2024724  # PASA_Verification.py gendata(seed = 2024724)
HYBRID_AMPLITUDE = 10.0  # "Am = 10.0" for distribution 1
BLOCK_K = 128  # baseN
#: The fixed points near 1 - 2**-k, k = 4, 5, 6 (spec/pasa_beta.py), for n = 128 in FP16.
DEFAULT_BETAS = tuple(fixed_point(1 - 2.0 ** -k, BLOCK_K).beta for k in (4, 5, 6))
FA_POLICIES = {"fa_fp32": PrecisionPolicy.uniform(Format.FP32), "fa_fp16": PrecisionPolicy.uniform(Format.FP16),
               "fa_fp16_scale_q": PrecisionPolicy.uniform(Format.FP16), "fa_bf16": PrecisionPolicy.uniform(Format.BF16)}
GOLD_CHUNK = 2 ** 22  # score entries per call of the certified oracle (memory)
GOLD_MARGIN = 10.0  # an RMSE is resolved when the gold's bound is at least this many times smaller


@dataclass(frozen=True)
class GridShape:
    """Shapes of one grid run."""

    q_heads: int
    kv_heads: int
    head_dim: int
    seq_q: int
    seq_k: int

    def __post_init__(self) -> None:
        require(min(self.q_heads, self.kv_heads, self.head_dim, self.seq_q, self.seq_k) >= 1
                and self.q_heads % self.kv_heads == 0, DomainError,
                f"shape: expected positive sizes with kv heads dividing q heads, got {self}")


FULL_SHAPE = GridShape(28, 4, 128, 1407, 1407)  # PASA_Verification.py __main__
DEFAULT_SHAPE = GridShape(2, 1, 128, 64, 1407)  # the full key length (11 blocks, padding), fewer queries
QUICK_SHAPE = GridShape(1, 1, 128, 2, 33)  # attnspec verify, with QUICK_BLOCK: two blocks, the second padded
QUICK_BLOCK = 32  # PASA's block length in the quick check (beta = 15/16 keeps M~ and gamma exact for n = 32 too)


@dataclass(frozen=True)
class Cell:
    """One input distribution of the grid."""

    distribution: str  # "uniform" or "hybrid"
    bias: float
    amplitude: float

    @property
    def name(self) -> str:
        return f"{self.distribution}(b={self.bias:g}, A={self.amplitude:g})"


def grid_cells(biases=PASA_BIASES, amplitudes=PASA_AMPLITUDES, hybrid: bool = True) -> list[Cell]:
    """Return the uniform cells (bias x amplitude), then the hybrid cells (one per bias, Am = 10)."""
    cells = [Cell("uniform", b, a) for b in biases for a in amplitudes]
    return cells + ([Cell("hybrid", b, HYBRID_AMPLITUDE) for b in biases] if hybrid else [])


def cell_problem(cell: Cell, shape: GridShape, seed: int = SEED) -> AttentionProblem:
    """Return the cell's problem: BF16 inputs as the script stores them, scale 1/sqrt(d)."""
    params = dict(seed=seed, bias=cell.bias, amplitude=cell.amplitude, distribution=cell.distribution, b=1,
                  hkv=shape.kv_heads, group=shape.q_heads // shape.kv_heads, sq=shape.seq_q, sk=shape.seq_k,
                  dk=shape.head_dim, dv=shape.head_dim, scale_factor=1.0)
    return build_case("pasa_bias", Format.BF16, params).problem()


def gold(problem: AttentionProblem) -> tuple[np.ndarray, float]:
    """Return (the certified oracle's O, the largest radius of its enclosures), by chunks of query rows."""
    rows = max(1, GOLD_CHUNK // (problem.q_heads * problem.k.shape[2]))
    parts, radius = [], 0.0
    for start in range(0, problem.q.shape[2], rows):
        part = attention_problem(problem.q[:, :, start:start + rows], problem.k, problem.v, scale=problem.scale)
        result = certified_from_problem(part, fmt=None)
        parts.append(result.out_mid)
        radius = max(radius, float(np.max(result.out_rad, initial=0.0)))
    return np.concatenate(parts, axis=2), radius


def run_column(name: str, problem: AttentionProblem, config: PasaConfig | None) -> tuple[np.ndarray, dict | None]:
    """Return (O, PASA trace or None) of one column on one problem."""
    if config is not None:
        r = pasa_from_problem(problem, config, POLICY_PASA_FP16)
        return r.out, {"peaks": r.peaks, "nonfinite": sorted(r.nonfinite)}
    policy = FA_POLICIES[name]
    if name == "fa_fp16_scale_q":  # the scale folded into Q in FP16, then scale 1
        q = round_to(round_to(problem.q, Format.FP16) * problem.scale, Format.FP16)
        problem = replace(problem, q=q, scale=1.0, scale_is_default=False)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in an overflowed FP16 column is the point
        return flash_from_problem(problem, policy, BLOCK_K).out, None


def columns(betas, author: bool) -> dict[str, PasaConfig | None]:
    """Return the report's columns: the FA baselines (None), then one PASA config per beta (and the author's)."""
    cols: dict[str, PasaConfig | None] = {name: None for name in FA_POLICIES}
    for beta in betas:
        cols[f"pasa_b{beta:.6g}"] = replace(PASA_ATTNSPEC, beta=float(beta))
    if author:
        cols["pasa_author"] = PASA_AUTHOR
    return cols


def gemm_overflows(problem: AttentionProblem) -> bool:
    """Return True when some FP16 Q K^T entry of the data rounds to Inf (exact sums, rounded once)."""
    q = round_to(problem.q, Format.FP16)
    k = round_to(problem.k_per_q_head(), Format.FP16)
    for h in range(problem.q_heads):  # one head at a time keeps the (Sq, Sk) block small
        if np.any(np.isinf(matmul_rounded(q[:, h], np.swapaxes(k[:, h], -1, -2), Format.FP16))):
            return True
    return False


def predictions(cell: Cell, problem: AttentionProblem, cols: dict[str, PasaConfig | None]) -> dict:
    """Return the box-model verdicts for a cell: naive FP16 FA (possible, certain), and each PASA column's certificate.

    Certificates cover the attnspec variant with initial max -inf; other columns get none.
    """
    if cell.distribution == "uniform":
        q_box = k_box = Box(cell.bias, cell.amplitude)
        v_max = abs(cell.bias) + cell.amplitude
    else:  # the hybrid data is no box: use the smallest boxes holding the actual data
        q_box, k_box = Box.of(problem.q), Box.of(problem.k)
        v_max = float(np.max(np.abs(problem.v)))
    d, n_kv = problem.q.shape[3], problem.k.shape[2]
    naive = naive_fa_overflow(q_box, k_box, d)
    certificates = {}
    for name, config in cols.items():
        if config is not None and config.variant == "attnspec" and config.initial_max == -np.inf:
            cert = pasa_certificate(q_box, k_box, v_max, d, n_kv, scale=problem.scale, config=config)
            certificates[name] = {"certified": cert.safe, "failed_link": cert.failed,
                                  "bounds": {k: float(v) for k, v in cert.bounds.items()}}
    return {"naive_possible": naive.possible, "naive_certain": naive.certain, "naive_max_logit": float(naive.max_logit),
            "certificates": certificates}


def run_cell(cell: Cell, shape: GridShape, cols: dict[str, PasaConfig | None], seed: int = SEED,
             with_gold: bool = True) -> dict:
    """Return one cell's row: metrics and overflow per column, the predictions, the gold's bound (no wall time)."""
    problem = cell_problem(cell, shape, seed)
    gold_out, radius = gold(problem) if with_gold else (None, None)
    rms_v = float(np.sqrt(np.mean(problem.v ** 2)))
    results = {}
    for name, config in cols.items():
        out, trace = run_column(name, problem, config)
        overflowed = not np.all(np.isfinite(out)) or bool(trace and trace["nonfinite"])
        entry = {"overflow": overflowed, "trace": trace}
        if gold_out is not None:
            rmse = float(np.sqrt(np.mean((out - gold_out) ** 2))) if not overflowed else None
            entry.update(rmse=rmse, rel_rmse=None if rmse is None else rmse / rms_v)
        results[name] = entry
    row = {"cell": asdict(cell), "name": cell.name, "rms_v": rms_v, "gemm_overflow": gemm_overflows(problem),
           "predictions": predictions(cell, problem, cols), "columns": results}
    if gold_out is not None:
        row["gold_rel_bound"] = bound = radius / rms_v
        for entry in results.values():
            entry["resolved"] = entry["rel_rmse"] is not None and entry["rel_rmse"] >= GOLD_MARGIN * bound
        graded = [e["rel_rmse"] for e in results.values() if e["resolved"]]
        row["gold_margin"] = min(graded) / bound if graded and bound else None
    return row


def claims(rows: list[dict]) -> list[str]:
    """Return the failed overflow claims of the module docstring (empty when all hold)."""
    failed = []
    for row in rows:
        pred, cols = row["predictions"], row["columns"]
        fa16 = cols.get("fa_fp16")
        if fa16 is not None and row["cell"]["distribution"] == "uniform":
            if fa16["overflow"] and not pred["naive_possible"]:
                failed.append(f"{row['name']}: FP16 FA overflowed where the box bound says it cannot")
            if pred["naive_certain"] and not fa16["overflow"]:
                failed.append(f"{row['name']}: FP16 FA did not overflow where the box forces it")
        if fa16 is not None and fa16["overflow"] != row["gemm_overflow"]:
            failed.append(f"{row['name']}: FP16 FA overflow ({fa16['overflow']}) differs from its Q K^T "
                          f"overflow ({row['gemm_overflow']})")
        for name, entry in cols.items():
            if entry["trace"] is None:
                continue
            if entry["overflow"]:
                failed.append(f"{row['name']}: {name} overflowed ({entry['trace']['nonfinite']})")
            cert = pred["certificates"].get(name)
            if cert is not None and cert["certified"]:
                over = {k: v for k, v in entry["trace"]["peaks"].items() if v > cert["bounds"].get(k, np.inf)}
                if over:
                    failed.append(f"{row['name']}: {name} exceeded its certified bounds {over}")
    return failed


def run_grid(shape: GridShape, cells: list[Cell], cols: dict[str, PasaConfig | None], seed: int = SEED,
             with_gold: bool = True, progress=None) -> dict:
    """Return the whole report: shape, rows, and the failed claims; ``progress(row, seconds)`` after each cell.

    The report holds no wall time, so the same arguments give the same report byte for byte.
    """
    rows = []
    for cell in cells:
        start = time.perf_counter()
        rows.append(run_cell(cell, shape, cols, seed, with_gold))
        if progress is not None:
            progress(rows[-1], time.perf_counter() - start)
    return {"source": "arXiv:2503.01873; chenglong92/PASA@14f5c6f PASA_Verification.py", "seed": seed,
            "shape": asdict(shape), "block_k": BLOCK_K, "columns": list(cols), "rows": rows,
            "failed_claims": claims(rows)}


# ----------------------------------------------------------------------------------------------
# Output: table, JSON, CSV, PNG
# ----------------------------------------------------------------------------------------------

def _cell_text(entry: dict, row: dict) -> str:
    if entry["overflow"]:
        return "OVF"
    if entry.get("rel_rmse") is None:
        return "-"
    return f"{entry['rel_rmse']:.2e}" if entry["resolved"] else f"<{GOLD_MARGIN * row['gold_rel_bound']:.1e}"


def table_text(report: dict) -> str:
    """Return the relative-RMSE table (RMSE / RMS(V)), OVF where a column overflowed."""
    cols = report["columns"]
    out = io.StringIO()
    out.write(f"{'cell':<26} " + " ".join(f"{c:>16}" for c in cols) + "   naive(box)  certified\n")
    for row in report["rows"]:
        pred = row["predictions"]
        naive = "certain" if pred["naive_certain"] else "possible" if pred["naive_possible"] else "never"
        certs = pred["certificates"]
        cert = "/".join("yes" if c["certified"] else f"no:{c['failed_link']}" for c in certs.values()) or "-"
        out.write(f"{row['name']:<26} " + " ".join(f"{_cell_text(row['columns'][c], row):>16}" for c in cols)
                  + f"   {naive:>10}  {cert}\n")
    if report["rows"] and "gold_rel_bound" in report["rows"][0]:
        worst = max(r["gold_rel_bound"] for r in report["rows"])
        margin = min((r["gold_margin"] for r in report["rows"] if r["gold_margin"] is not None), default=None)
        out.write(f"\ngold: reference.certified, enclosure radius <= {worst:.1e} RMS(V) in every cell"
                  + (f", at least {margin:.0f} times below the smallest resolved RMSE of its cell" if margin else "")
                  + f"; '<x': below {GOLD_MARGIN:g} times the gold's bound, not resolved\n")
    failed = report["failed_claims"]
    out.write(f"overflow claims: {'all hold' if not failed else f'{len(failed)} FAILED'}\n")
    for f in failed:
        out.write(f"  {f}\n")
    return out.getvalue()


def csv_text(report: dict) -> str:
    """Return one CSV line per (cell, column): distribution, bias, amplitude, column, rmse, rel_rmse, overflow."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["distribution", "bias", "amplitude", "column", "rmse", "rel_rmse", "overflow",
                     "naive_possible", "naive_certain", "pasa_certified"])
    for row in report["rows"]:
        pred = row["predictions"]
        for name, entry in row["columns"].items():
            cert = pred["certificates"].get(name)
            writer.writerow([row["cell"]["distribution"], row["cell"]["bias"], row["cell"]["amplitude"], name,
                             entry.get("rmse"), entry.get("rel_rmse"), entry["overflow"], pred["naive_possible"],
                             pred["naive_certain"], "" if cert is None else cert["certified"]])
    return out.getvalue()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".pasa-grid-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; a report is meant to be read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def png_bytes(report: dict) -> bytes:
    """Return a PNG heat map per column of log10(RMSE / RMS(V)) over bias x amplitude (uniform cells); OVF marked."""
    import matplotlib  # optional extra "plot"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["cell"]["distribution"] == "uniform"]
    biases = sorted({r["cell"]["bias"] for r in rows})
    amps = sorted({r["cell"]["amplitude"] for r in rows})
    cols = report["columns"]
    per_row = min(4, len(cols))
    grid_rows = -(-len(cols) // per_row)
    fig, axes = plt.subplots(grid_rows, per_row, figsize=(3.0 * per_row, 2.8 * grid_rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[len(cols):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, cols):
        grid = np.full((len(biases), len(amps)), np.nan)
        for r in rows:
            entry = r["columns"][name]
            i, j = biases.index(r["cell"]["bias"]), amps.index(r["cell"]["amplitude"])
            if not entry["overflow"] and entry.get("rel_rmse"):
                grid[i, j] = np.log10(max(entry["rel_rmse"], GOLD_MARGIN * r["gold_rel_bound"]))
            elif entry["overflow"]:
                ax.text(j, i, "OVF", ha="center", va="center", color="red", fontsize=8)
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=-8, vmax=0)
        ax.set_title(name, fontsize=8)
        ax.set_xticks(range(len(amps)), [f"{a:g}" for a in amps], fontsize=7)
        ax.set_yticks(range(len(biases)), [f"{b:g}" for b in biases], fontsize=7)
        ax.set_xlabel("amplitude A", fontsize=7)
        ax.set_ylabel("bias b", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="log10 RMSE / RMS(V)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


@tool("report", "pasa-grid", "the PASA paper's random benchmark: FA FP32/FP16/BF16 and PASA FP16 vs the gold")
def main(argv: list[str]) -> int:
    """Run ``attnspec report pasa-grid``; exit 1 when an overflow claim fails, 2 on bad arguments."""
    parser = argparse.ArgumentParser(prog="attnspec report pasa-grid", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the script's shapes: 28 q heads, 4 kv heads, "
                                                            "d 128, S 1407 (most of a day on 2 cores)")
    for name, default in asdict(DEFAULT_SHAPE).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"override the shape (default {default}, --full {getattr(FULL_SHAPE, name)})")
    parser.add_argument("--beta", type=float, action="append", help="a PASA column per beta (repeatable; "
                        f"default the FP16 fixed points {', '.join(f'{b:g}' for b in DEFAULT_BETAS)})")
    parser.add_argument("--no-author", action="store_true", help="leave out the pasa_author column")
    parser.add_argument("--no-hybrid", action="store_true", help="leave out the normal + Bernoulli cells")
    parser.add_argument("--biases", type=float, nargs="+", default=list(PASA_BIASES), metavar="B",
                        help=f"biases of the grid (default {' '.join(f'{b:g}' for b in PASA_BIASES)})")
    parser.add_argument("--amplitudes", type=float, nargs="+", default=list(PASA_AMPLITUDES), metavar="A",
                        help=f"amplitudes of the uniform cells (default {' '.join(f'{a:g}' for a in PASA_AMPLITUDES)})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the inputs (default {SEED})")
    parser.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write one line per (cell, column) as CSV")
    parser.add_argument("--png", metavar="FILE", help="write heat maps (needs the 'plot' extra: matplotlib)")
    args = parser.parse_args(argv)
    base = FULL_SHAPE if args.full else DEFAULT_SHAPE
    shape = GridShape(**{k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in asdict(base).items()})
    for flag in ("json", "csv", "png"):  # fail before hours of work, not after
        path = getattr(args, flag)
        folder = None if path is None else os.path.dirname(os.path.abspath(path))
        require(path is None or (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)
                                 and not os.path.isdir(path)), DomainError,
                f"--{flag}: expected a file in an existing, writable directory, got {path!r}")
    if args.png and importlib.util.find_spec("matplotlib") is None:
        print("attnspec report pasa-grid: --png needs matplotlib: pip install 'attnspec[plot]'", file=sys.stderr)
        return 2
    cols = columns(args.beta or DEFAULT_BETAS, not args.no_author)
    cells = grid_cells(args.biases, args.amplitudes, hybrid=not args.no_hybrid)
    report = run_grid(shape, cells, cols, args.seed,
                      progress=lambda row, seconds: print(f"  {row['name']}: {seconds:.2f} s", file=sys.stderr,
                                                          flush=True))
    print(table_text(report), end="")
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=1) + "\n").encode())
    if args.csv:
        write_atomic(args.csv, csv_text(report).encode())
    if args.png:
        write_atomic(args.png, png_bytes(report))
    return 1 if report["failed_claims"] else 0


# ----------------------------------------------------------------------------------------------
# Checks for attnspec verify
# ----------------------------------------------------------------------------------------------

@check("pasa.grid.overflow_map", "property")
def check_pasa_grid_overflow_map() -> Outcome:
    """Return pass iff, on the uniform cells at a small shape, FP16 FA overflows where the bounds say and PASA never.

    The cells are the paper's 4 x 4 uniform grid at d = 128 (the overflow thresholds depend on
    d), with 2 queries, 33 keys and PASA blocks of 32 keys to stay within the quick budget.
    """
    cols = {"fa_fp16": None, f"pasa_n{QUICK_BLOCK}": replace(PASA_ATTNSPEC, block_k=QUICK_BLOCK)}
    report = run_grid(QUICK_SHAPE, grid_cells(hybrid=False), cols, with_gold=False)
    fa = [r["name"] for r in report["rows"] if r["columns"]["fa_fp16"]["overflow"]]
    certain = [r["name"] for r in report["rows"] if r["predictions"]["naive_certain"]]
    failed = report["failed_claims"]
    ok = not failed and bool(certain)
    return Outcome.from_bool(ok, f"FP16 FA overflowed in {len(fa)}/{len(report['rows'])} cells "
                                 f"({len(certain)} forced by the box); PASA in none"
                             + (f"; failed: {failed}" if failed else ""),
                             {"fa_fp16_overflow": fa, "naive_certain": certain, "failed_claims": failed})

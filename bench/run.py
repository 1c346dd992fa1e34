"""The performance benchmarks of issue 8, each a measured figure against its goal.

    python bench/run.py                   # (a)-(e): one table of measured against goal
    python bench/run.py --only a,b,c      # some of them ((d) and (e) take minutes)
    python bench/run.py --scaling         # the certified oracle's time and memory against S_k
    python bench/run.py --json FILE       # also write every row, with its data, as JSON

(a) reference.certified vs plain numpy float64 attention, DeepSeek-V3 MLA decode shape
    (B=1, 128 heads sharing one latent KV head, s_q=1, S_k=4096, Dk=576, Dv=512, BF16 values):
    time ratio (goal <= 3x) for BF16 outputs (tier 1a) and for FP32 outputs (tier 1b), and peak
    memory against the inputs plus outputs (goal <= 2x), the larger of the two formats.
(b) reference.certified vs the pure-mpmath oracle (reference.oracle) at a reduced shape:
    speed-up (goal >= 100x), FP32 outputs.
(c) spec FlashAttention, AMLA and PASA emulations vs numpy dense attention computed natively in
    the same format (goal <= 5x): float32 for FlashAttention (FP32 policy), float32 on BF16
    inputs with a BF16 output for AMLA (BF16 GEMM inputs, FP32 accumulation and softmax; numpy
    has no BF16 GEMM), float16 for PASA (FP16 policy; numpy's float16 matmul has no BLAS). The
    note also gives the ratio to the spec's dense attention emulated under the same policy.
(d) ``attnspec prove`` (the whole proof suite), wall time (goal <= 60 s).
(e) ``pytest`` under the ci hypothesis profile, wall time (goal <= 600 s).

Every ratio is measured in one process with interleaved repeats (bench/_common.py). The goals
are stated for 2 cores; the table's header records the cores and the load average seen.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time

from dataclasses import dataclass

import ml_dtypes
import numpy as np

import _common as common
from attnspec.reference import certified
from attnspec.reference.oracle import attention_oracle
from attnspec.spec.attention import softmax_attention
from attnspec.spec.formats import Format, round_to
from attnspec.spec.problem import attention_problem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEEPSEEK_SCALE = 192**-0.5  # DeepSeek-V3 MLA: softmax scale 1/sqrt(qk_nope + qk_rope) = 1/sqrt(128 + 64)


def numpy_attention(q, k, v, scale):
    """Return (O, LSE) by plain float64 numpy: the rows of a kv-head group share one GEMM, no checks."""
    b, hq, sq, dk = q.shape
    hkv = k.shape[1]
    qg = q.reshape(b, hkv, hq // hkv * sq, dk)  # (B, Hkv, G*Sq, Dk)
    s = qg @ np.swapaxes(k, -1, -2)  # (B, Hkv, G*Sq, Sk)
    s *= scale
    m = s.max(axis=-1, keepdims=True)
    s -= m
    p = np.exp(s, out=s)
    l = p.sum(axis=-1, keepdims=True)
    out = (p @ v) / l  # (B, Hkv, G*Sq, Dv)
    return out.reshape(b, hq, sq, -1), (m + np.log(l)).reshape(b, hq, sq)


def decode_inputs(sk: int = 4096, heads: int = 128, seed: int = 0):
    """Return (q, k, v) of the MLA decode shape with BF16 values; V is the latent part of K, copied."""
    rng = np.random.default_rng(seed)
    q = round_to(rng.standard_normal((1, heads, 1, 576)), Format.BF16)
    k = round_to(rng.standard_normal((1, 1, sk, 576)), Format.BF16)
    return q, k, np.ascontiguousarray(k[..., :512])


def bench_decode(repeat: int) -> list[common.Row]:
    """(a): certified vs plain numpy on the decode shape: time for BF16 and FP32 outputs, and memory."""
    q, k, v = decode_inputs()
    scale = DEEPSEEK_SCALE
    call = {f: (lambda f=f: certified.certified_attention(q, k, v, scale=scale, fmt=f)) for f in ("bf16", "fp32")}
    times = common.interleaved({"numpy": lambda: numpy_attention(q, k, v, scale),
                                "problem": lambda: attention_problem(q, k, v, scale=scale), **call}, repeat)
    rows = []
    for f in ("bf16", "fp32"):
        result = call[f]()
        wall, cpu = times[f].wall / times["numpy"].wall, times[f].cpu / times["numpy"].cpu
        note = (f"{1e3 * times[f].wall:.0f} ms vs {1e3 * times['numpy'].wall:.0f} ms; CPU-time ratio {cpu:.2f}x; "
                f"attention_problem alone {times['problem'].wall / times['numpy'].wall:.2f}x; {result.summary()}")
        rows.append(common.Row("a", f"decode S_k=4096, {f} out: time vs numpy fp64", wall, 3, "x", note=note,
                               data={"seconds": times[f].wall, "numpy_seconds": times["numpy"].wall, "cpu_ratio": cpu,
                                     "problem_seconds": times["problem"].wall, "first_tier": result.first_tier,
                                     "refined_rows": result.refined_rows, "fallback_out": result.fallback_out,
                                     "fallback_lse": result.fallback_lse}))
    out, lse = numpy_attention(q, k, v, scale)
    io = common.nbytes(q, k, v, out, lse)
    inputs = common.nbytes(q, k, v)
    peaks = {f: common.peak_bytes(call[f]) for f in call}
    peak = max(peaks.values())
    problem_peak = common.peak_bytes(lambda: attention_problem(q, k, v, scale=scale))
    numpy_peak = common.peak_bytes(lambda: numpy_attention(q, k, v, scale))
    rows.append(common.Row("a", "decode S_k=4096: peak memory / (inputs + outputs)", (inputs + peak) / io, 2, "x",
                           note=f"{(inputs + peak) / 2**20:.0f} MB incl. {inputs / 2**20:.0f} MB inputs (the larger of "
                                + ", ".join(f"{f} {(inputs + p) / io:.2f}x" for f, p in peaks.items())
                                + f"); attention_problem alone allocates {problem_peak / 2**20:.0f} MB; "
                                  f"numpy fp64 {(inputs + numpy_peak) / io:.2f}x",
                           data={"inputs_bytes": inputs, "io_bytes": io, "call_peak_bytes": peaks,
                                 "problem_peak_bytes": problem_peak, "numpy_peak_bytes": numpy_peak}))
    return rows


def bench_mpmath() -> list[common.Row]:
    """(b): certified vs the pure-mpmath oracle, FP32 outputs, at a shape the oracle does in under a minute."""
    rng = np.random.default_rng(1)
    shape = dict(b=1, hq=8, hkv=2, sq=4, sk=256, dk=64, dv=64)
    q = round_to(rng.standard_normal((shape["b"], shape["hq"], shape["sq"], shape["dk"])), Format.FP32)
    k = round_to(rng.standard_normal((shape["b"], shape["hkv"], shape["sk"], shape["dk"])), Format.FP32)
    v = round_to(rng.standard_normal((shape["b"], shape["hkv"], shape["sk"], shape["dv"])), Format.FP32)
    oracle_s, exact = common.wall(lambda: attention_oracle(q, k, v, causal=True).rounded(Format.FP32))
    fast = common.interleaved({"certified": lambda: certified.certified_attention(q, k, v, causal=True, fmt="fp32")}, 5)
    result = certified.certified_attention(q, k, v, causal=True, fmt="fp32")
    agree = np.array_equal(result.out, exact[0]) and np.array_equal(result.lse, exact[1])
    speedup = oracle_s / fast["certified"].wall
    return [common.Row("b", "certified vs mpmath oracle, fp32 out: speed-up", speedup, 100, "x", higher_is_better=True,
                       note=f"{shape}, causal; mpmath {oracle_s:.1f} s, certified {1e3 * fast['certified'].wall:.1f} ms; "
                            f"identical results: {agree}; {result.summary()}",
                       data={"shape": shape, "oracle_seconds": oracle_s, "certified_seconds": fast["certified"].wall,
                             "identical": agree})]


@dataclass(frozen=True)
class Native:
    """How numpy computes dense attention natively in an emulation's format: the array dtype, the
    format the inputs are rounded into first, and the dtype the output is cast to."""

    dtype: type
    inputs: Format
    output: type | None = None

    def describe(self) -> str:
        out = "" if self.output is None else f", output cast to {np.dtype(self.output).name}"
        return f"numpy {np.dtype(self.dtype).name} on {self.inputs} inputs{out}"

    def prepare(self, q, k, v):
        return tuple(round_to(a, self.inputs).astype(self.dtype) for a in (q, k, v))

    def run(self, q, k, v, scale):
        out, lse = numpy_attention(q, k, v, self.dtype(scale))
        return (out if self.output is None else out.astype(self.output)), lse


def _emulations():
    """Return {name: (run(problem), policy, native)} for the spec emulations that exist in this checkout."""
    from attnspec.spec.flash import POLICY_FP32, flash_from_problem

    found = {"flash (fp32, block 128)": (lambda p: flash_from_problem(p, POLICY_FP32, block_k=128), POLICY_FP32,
                                         Native(np.float32, Format.FP32))}
    try:
        from attnspec.spec.amla import POLICY_AMLA, amla_from_problem
        found["amla (cann, bf16/fp32)"] = (lambda p: amla_from_problem(p, "cann", POLICY_AMLA), POLICY_AMLA,
                                           Native(np.float32, Format.BF16, ml_dtypes.bfloat16))
    except ImportError as exc:
        print(f"(c) skipped AMLA: {exc}", file=sys.stderr)
    try:
        from attnspec.spec.pasa import POLICY_PASA_FP16, pasa_from_problem
        found["pasa (attnspec, fp16)"] = (lambda p: pasa_from_problem(p, policy=POLICY_PASA_FP16), POLICY_PASA_FP16,
                                          Native(np.float16, Format.FP16))
    except ImportError as exc:
        print(f"(c) skipped PASA: {exc}", file=sys.stderr)
    return found


def bench_emulations(repeat: int) -> list[common.Row]:
    """(c): each spec emulation against numpy dense attention computed natively in its format (and, as
    extra information, against the spec's dense attention emulated under the same policy)."""
    rng = np.random.default_rng(2)
    shape = (1, 16, 4, 2048, 128)  # B, Hq (one kv head, as in MLA decode with s_q = 4), Sq, Sk, D
    b, hq, sq, sk, d = shape
    q = round_to(rng.standard_normal((b, hq, sq, d)), Format.FP16)
    k = round_to(rng.standard_normal((b, 1, sk, d)), Format.FP16)
    v = round_to(rng.standard_normal((b, 1, sk, d)), Format.FP16)
    problem = attention_problem(q, k, v)
    float32 = Native(np.float32, Format.FP16)
    rows = []
    for name, (run, policy, native) in _emulations().items():
        arrays = native.prepare(q, k, v)
        contenders = {"native": lambda: native.run(*arrays, d**-0.5), "emulation": lambda: run(problem),
                      "dense": lambda: softmax_attention(problem, policy)}
        if native.dtype is not np.float32:  # where native is not float32, also the float32 floor
            arrays32 = float32.prepare(q, k, v)
            contenders["float32"] = lambda: float32.run(*arrays32, d**-0.5)
        times = common.interleaved(contenders, repeat)
        emulation, base = times["emulation"], times["native"]
        floor = "" if "float32" not in times else \
            f"; vs numpy float32 ({1e3 * times['float32'].wall:.1f} ms): {emulation.wall / times['float32'].wall:.0f}x"
        rows.append(common.Row(
            "c", f"{name} vs {native.describe()}", emulation.wall / base.wall, 5, "x",
            note=f"B,Hq,Sq,Sk,D={shape}; {1e3 * emulation.wall:.0f} ms vs {1e3 * base.wall:.1f} ms; CPU-time ratio "
                 f"{emulation.cpu / base.cpu:.1f}x; vs the spec's dense attention under {policy.name} "
                 f"({1e3 * times['dense'].wall:.0f} ms): {emulation.wall / times['dense'].wall:.2f}x{floor}",
            data={"seconds": emulation.wall, "native_seconds": base.wall, "native": native.describe(),
                  "dense_same_policy_seconds": times["dense"].wall,
                  "numpy_float32_seconds": times["float32"].wall if "float32" in times else base.wall}))
    return rows


def _timed_command(argv: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    return time.perf_counter() - start, done


def bench_proofs() -> list[common.Row]:
    """(d): the whole proof suite, ``attnspec prove``, wall time."""
    seconds, done = _timed_command([sys.executable, "-m", "attnspec", "prove"])
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return [common.Row("d", "attnspec prove: wall time", seconds if done.returncode == 0 else math.nan, 60, "s",
                       note=f"exit {done.returncode}: {last}", data={"seconds": seconds, "exit": done.returncode})]


def bench_tests() -> list[common.Row]:
    """(e): the test suite under the ci hypothesis profile, wall time."""
    seconds, done = _timed_command([sys.executable, "-m", "pytest", "-q"], {"ATTNSPEC_HYPOTHESIS_PROFILE": "ci"})
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return [common.Row("e", "pytest, ci profile: wall time", seconds, 600, "s",
                       note=f"exit {done.returncode}: {last}", data={"seconds": seconds, "exit": done.returncode})]


def scaling(fmt: str, lengths: list[int], repeat: int) -> dict:
    """Return time and peak memory of the certified oracle (and of numpy fp64) against S_k at the decode shape."""
    points = []
    target = None if fmt == "none" else fmt
    for sk in lengths:
        q, k, v = decode_inputs(sk)
        call = lambda: certified.certified_attention(q, k, v, scale=DEEPSEEK_SCALE, fmt=target)  # noqa: E731
        times = common.interleaved({"certified": call, "numpy": lambda: numpy_attention(q, k, v, DEEPSEEK_SCALE)},
                                   repeat)
        peak = common.peak_bytes(call)
        tiers = call().summary()
        points.append({"sk": sk, "seconds": times["certified"].wall, "cpu_seconds": times["certified"].cpu,
                       "numpy_seconds": times["numpy"].wall, "numpy_cpu_seconds": times["numpy"].cpu,
                       "peak_bytes": peak, "inputs_bytes": common.nbytes(q, k, v), "tiers": tiers})
        print(f"  S_k={sk:>6}: certified {1e3 * times['certified'].wall:8.1f} ms wall {1e3 * times['certified'].cpu:8.1f} "
              f"ms CPU; numpy {1e3 * times['numpy'].wall:7.1f} ms wall {1e3 * times['numpy'].cpu:7.1f} ms CPU; "
              f"peak {peak / 2**20:7.1f} MB; {tiers}", file=sys.stderr, flush=True)
    sks = [p["sk"] for p in points]
    cpu = [p["cpu_seconds"] for p in points]
    local = [common.loglog_slope(sks[i:i + 2], cpu[i:i + 2]) for i in range(len(points) - 1)]
    upper = len(points) // 2
    return {"fmt": fmt, "points": points,
            "time_exponent": common.loglog_slope(sks, cpu),
            "time_exponent_upper_half": common.loglog_slope(sks[upper:], cpu[upper:]),
            "memory_exponent": common.loglog_slope(sks, [p["peak_bytes"] for p in points]),
            "numpy_time_exponent": common.loglog_slope(sks, [p["numpy_cpu_seconds"] for p in points]),
            "local_exponents": local,
            "linear_from": next((sks[i] for i, x in enumerate(local) if 0.85 <= x <= 1.15), None),
            "superlinear_from": next((sks[i] for i, x in enumerate(local) if x > 1.15 and sks[i] >= 4096), None)}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--only", default="a,b,c,d,e", help="comma-separated benchmarks to run (default: all)")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved repeats per timing (default 7)")
    parser.add_argument("--scaling", action="store_true", help="measure time and memory against S_k instead")
    parser.add_argument("--fmt", default="none",
                        help="output format for --scaling: none (the float64 enclosure of tier 1a only; default), "
                             "bf16, fp16 or fp32 (certified rounding: tier 1a or 1b by the oracle's rule, then tiers "
                             "2 and 3 where needed)")
    parser.add_argument("--max-sk", type=int, default=65536, help="largest S_k for --scaling (default 65536)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}, "
          f"numpy {np.__version__}", flush=True)
    if args.scaling:
        lengths = [2**i for i in range(10, int(math.log2(args.max_sk)) + 1)]
        report = scaling(args.fmt, lengths, max(2, args.repeat // 2))
        print(f"CPU time ~ S_k^{report['time_exponent']:.2f} over all points, S_k^"
              f"{report['time_exponent_upper_half']:.2f} over the upper half (numpy fp64: S_k^"
              f"{report['numpy_time_exponent']:.2f}); peak memory ~ S_k^{report['memory_exponent']:.2f}; local time "
              f"exponents {', '.join(f'{x:.2f}' for x in report['local_exponents'])}; linear (0.85-1.15) from S_k = "
              f"{report['linear_from']}, superlinear (> 1.15) from S_k = {report['superlinear_from']}")
        if args.json:
            common.write_json(args.json, {"scaling": report})
        return 0
    chosen = set(args.only.split(","))
    unknown = chosen - set("abcde")
    if unknown:
        parser.error(f"--only: unknown benchmarks {sorted(unknown)}; expected letters from a-e")
    runners = {"a": lambda: bench_decode(args.repeat), "b": bench_mpmath, "c": lambda: bench_emulations(args.repeat),
               "d": bench_proofs, "e": bench_tests}
    rows = []
    for key in sorted(chosen):
        print(f"running ({key}) ...", file=sys.stderr, flush=True)
        rows.extend(runners[key]())
    print(common.format_table(rows))
    if args.json:
        common.write_json(args.json, {"rows": common.rows_json(rows), "load_average": os.getloadavg()})
    return 0 if all(r.status == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

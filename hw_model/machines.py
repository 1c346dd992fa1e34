"""Machine descriptions as data: the Ascend 910C die and package, the NVIDIA H800 SXM5, and the calibrations.

Every number is a dataclass field whose metadata says where it comes from, so a reader can
audit the model and a user can change one value with :func:`dataclasses.replace` and rerun
(``replace(ASCEND_910C_DIE, clock_hz=1.85e9)``). :func:`provenance` lists them.

Each field has a *basis*:

- ``cited``: a number stated in a public source (paper section, repository path at a commit);
- ``derived``: arithmetic on cited numbers, shown next to the value;
- ``inferred``: not stated anywhere; our reading of a source, said so in the note;
- ``calibrated``: fitted to a published measurement. Calibrated constants live only in
  :class:`Calibration` (this module) and :class:`attnspec.hw_model.serving.ServingCalibration`;
  each names the measurement it was calibrated against and the predictions that share it.

Sources (short names used in the metadata):

- ``amla``: AMLA, arXiv:2509.25224 (Liao et al., 2025): abstract and footnote 1 (the only
  retrievable parts): 614 TFLOPS, 86.8% of peak, FlashMLA at 66.7% / 80% of throttled peak.
- ``cm384``: Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384",
  arXiv:2506.12708 (v2 for hardware numbers, v3 for results): §3.3.1 die and package,
  Table 1 (v2) UB point-to-point, §5.5.2-§5.5.3 operator benchmarks.
- ``platform-ini``: hicann/runtime@681ef76 ``src/platform/platform_config/cann/Ascend910_93xx.ini``:
  the CANN compiler's per-SoC description of the 910C die (Ascend910_9381/9382: 24 AIC,
  48 AIV, cube_freq=1800 MHz; 9391/9392: cube_freq=1850 MHz; buffer sizes; per-core
  transfer rates in bytes per cycle, section ``[AICoreMemoryRates]``).
- ``cann-fia``: hicann/ops-transformer@c29bc10 ``attention/common/op_kernel/arch32/fia_*_nonquant_mla.h``
  (the AMLA kernel: tiling constants, flags, preload pipeline).
- ``flashmla``: deepseek-ai/FlashMLA@9241ae3 ``README.md`` and ``docs/20250422-new-kernel-deep-dive.md``.

Decision (2026-11-28): clock. AMLA's 614 TFLOPS at 86.8% implies a peak of 707.4 TFLOPS,
which is 48 AIC x 4096 MAC x 2 FLOP x 1.80 GHz = 707.8 TFLOPS: both dies of a 910C at
1.8 GHz. The CANN platform description of the 24-AIC 910C SKUs Ascend910_9381/9382 says
cube_freq=1800 MHz, so 1.8 GHz is both inferred from the paper and consistent with a cited
SKU; Ascend910_9391/9392 run at 1850 MHz (727.4 TFLOPS per package). Huawei's quoted
752 TFLOPS per package (Atlas 900 A3 page; 1,504 TOPS INT8 is the normalisation of
cm384's "tokens/s per TFLOPS" column) would need 1.91 GHz, which no platform file lists; we
keep it as ``quoted_peak_bf16`` for normalisations and never derive cycles from it.

Decision (2026-11-28): utilisations quoted by cm384 (MLA 65.4%, INT8 GEMM 77.4-82.7%) are
read as fractions of its own normalisation, 376 TFLOPS BF16 / 752 TOPS INT8 per die, and
converted to fractions of our 1.8 GHz cycle peak by the factor 752/707.8.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, MISSING
from typing import Any, Literal

Basis = Literal["cited", "derived", "inferred", "calibrated"]

GB = 1e9
TB = 1e12
KiB = 1024
MiB = 1024 * 1024


def cited(value: float, source: str, *, basis: Basis = "cited", unit: str = "", note: str = "") -> Any:
    """Return a dataclass field whose default is ``value`` and whose metadata records its provenance."""
    return field(default=value, metadata={"source": source, "basis": basis, "unit": unit, "note": note})


def calibrated(value: float, *, unit: str, against: str, shared_by: str, how: str) -> Any:
    """Return a dataclass field for a calibrated constant: what it was fitted to, and who uses it."""
    return field(default=value, metadata={"source": against, "basis": "calibrated", "unit": unit,
                                          "note": how, "shared_by": shared_by})


@dataclass(frozen=True)
class AscendDie:
    """One 910C die: the unit a CANN kernel runs on (the package shows up as two devices)."""

    name: str = "Ascend 910C die"
    aic: int = cited(24, "cm384 §3.3.1; platform-ini ai_core_cnt=24 (Ascend910_9381/9382)")
    aiv: int = cited(48, "cm384 §3.3.1; platform-ini vector_core_cnt=48; cann-fia 'vec:0-47'")
    clock_hz: float = cited(1.8e9, "platform-ini cube_freq=1800 (Ascend910_9381/9382); = 614/0.868 TFLOPS "
                            "/ (48 AIC x 8192 FLOP) [amla]", basis="inferred", unit="Hz",
                            note="inferred from AMLA's 86.8% and consistent with the cited SKU; 9391/9392 run at 1.85 GHz")
    cube_mac_bf16: int = cited(4096, "platform-ini cube_m/n/k_size=16 (16x16x16 per cycle); DV blog", unit="MAC/cycle")
    cube_mac_int8: int = cited(8192, "platform-ini DT_INT8=16,32,16 (16x32x16 per cycle)", unit="MAC/cycle")
    vector_bytes: int = cited(256, "platform-ini vec_calc_size=128 (FP16 lanes) x 2 B", basis="derived",
                              unit="B/cycle", note="one repeat of 8 x 32-B blocks per cycle: 64 FP32 lanes")
    l1_bytes: int = cited(512 * KiB, "platform-ini l1_size=524288; cann-fia l1BufferManager 7 x 72 KB", unit="B")
    l0a_bytes: int = cited(64 * KiB, "platform-ini l0_a_size=65536", unit="B")
    l0b_bytes: int = cited(64 * KiB, "platform-ini l0_b_size=65536", unit="B")
    l0c_bytes: int = cited(128 * KiB, "platform-ini l0_c_size=131072; cann-fia L0C_SIZE", unit="B")
    ub_bytes: int = cited(192 * KiB, "platform-ini ub_size=196608 (per AIV)", unit="B")
    l2_bytes: int = cited(192 * MiB, "platform-ini l2_size=201326592", unit="B")
    hbm_bytes: int = cited(64 * 1024 * MiB, "cm384 §3.3.1 (4 x 16 GB); platform-ini memory_size=68719476736", unit="B")
    hbm_bw: float = cited(1.6 * TB, "cm384 §3.3.1, §5.5.2 Table 9 (1,600 GB/s die peak)", unit="B/s")
    # Per-core transfer rates of the CANN compiler's cost model ([AICoreMemoryRates]).
    hbm_rate: float = cited(32, "platform-ini ddr_rate=32", unit="B/cycle/core",
                            note="x 24 cores x 1.8 GHz = 1.38 TB/s = 86.4% of the HBM peak")
    l2_read_rate: float = cited(110, "platform-ini l2_read_rate=110", unit="B/cycle/core")
    l2_write_rate: float = cited(86, "platform-ini l2_write_rate=86 (FIXPIPE L0C->GM)", unit="B/cycle/core")
    ub_to_gm_rate: float = cited(64, "platform-ini ub_to_l2_rate=64, ub_to_ddr_rate=64 (AIV MTE3)", unit="B/cycle/core")
    l1_to_l0a_rate: float = cited(512, "platform-ini l1_to_l0_a_rate=512", unit="B/cycle")
    l1_to_l0b_rate: float = cited(256, "platform-ini l1_to_l0_b_rate=256", unit="B/cycle")
    # Scale-up (UB) and scale-out ports, for the serving model.
    ub_link_bw: float = cited(196 * GB, "cm384 v2 §3.3.1: 7 x 224 Gbps per die per direction", basis="derived",
                              unit="B/s")
    ub_write_bw: float = cited(135 * GB, "cm384 v2 Table 1: NPU-NPU write, inter-node, per die", unit="B/s")
    ub_write_latency_s: float = cited(2.1e-6, "cm384 v2 Table 1: 512-B NPU-NPU write, inter-node", unit="s")
    collective_bw: float = cited(103 * GB, "cm384 Table 6 (v3): FusedCombine effective bandwidth at EP64-EP256, "
                                 "128 tokens per rank", unit="B/s",
                                 note="achieved per-die bandwidth of an all-to-all over UB, synchronisation included")
    rdma_bw: float = cited(25 * GB, "cm384 v2 §3.3.1: 200 Gbps per die", basis="derived", unit="B/s")
    die_to_die_bw: float = cited(270 * GB, "cm384 v2 §3.3.1: 270 GB/s per direction", unit="B/s")

    @property
    def peak_bf16(self) -> float:
        """Return the die's BF16 peak in FLOP/s: AIC x MAC/cycle x 2 x clock."""
        return self.aic * self.cube_mac_bf16 * 2 * self.clock_hz

    @property
    def peak_int8(self) -> float:
        """Return the die's INT8 peak in OP/s."""
        return self.aic * self.cube_mac_int8 * 2 * self.clock_hz

    @property
    def hbm_achievable(self) -> float:
        """Return the HBM bandwidth all cores reach together: min(peak, cores x per-core rate x clock)."""
        return min(self.hbm_bw, self.aic * self.hbm_rate * self.clock_hz)


@dataclass(frozen=True)
class AscendPackage:
    """A 910C package: two identical dies on one substrate (cm384 §3.3.1)."""

    die: AscendDie = field(default_factory=AscendDie)
    dies: int = cited(2, "cm384 §3.3.1")
    quoted_peak_bf16: float = cited(752 * TB, "Atlas 900 A3 SuperPoD page (288.7 PFLOPS / 384); cm384 per-TFLOPS "
                                    "column implies 1,504 TOPS INT8 = 2 x 752", unit="FLOP/s",
                                    note="marketing figure; needs 1.91 GHz with 48 AIC, no platform file lists it")

    @property
    def peak_bf16(self) -> float:
        """Return the package BF16 peak from first principles (both dies, the die's clock)."""
        return self.dies * self.die.peak_bf16

    @property
    def peak_int8(self) -> float:
        """Return the package INT8 peak from first principles."""
        return self.dies * self.die.peak_int8


@dataclass(frozen=True)
class Gpu:
    """An NVIDIA GPU as the roofline needs it: a peak, a throttled peak, and HBM bandwidth."""

    name: str = "NVIDIA H800 SXM5"
    peak_bf16: float = cited(990 * TB, "flashmla deep-dive: 'peak FLOPs of 990 TFlops' (dense BF16)", unit="FLOP/s")
    throttled_bf16: float = cited(865 * TB, "flashmla deep-dive: throttling to ~1600 MHz gives ~865 TFlops",
                                  unit="FLOP/s")
    hbm_bw: float = cited(3.35 * TB, "flashmla deep-dive: 3.35 TB/s", unit="B/s")


@dataclass(frozen=True)
class Calibration:
    """The calibrated constants of the kernel models: few, named, and each fitted to a measurement
    that is not one of the headline numbers it then predicts."""

    mmad_efficiency: float = calibrated(
        0.879, unit="fraction of the 4096-MAC/cycle peak",
        against="cm384 §5.5.3 Table 9 (v3): best INT8 grouped GEMM, 82.7% of 752 TOPS per die",
        shared_by="AMLA/baseline Cube stages (stages.py), every GEMM of the serving model (serving.py)",
        how="0.827 x 752 / 707.8: the sustained MMAD issue rate of a long K loop on the same Cube")
    gm_latency_cycles: float = calibrated(
        1022.4, unit="cycles per synchronous GM transfer",
        against="cm384 §5.5.2: compute-bound MLA at 65.4% of 376 TFLOPS per die, read as the pre-AMLA "
                "kernel (baseline FA, O rescaled through GM: ops-transformer incre_flash_attention_preload_mla.h, "
                "AMLAMODE NORMAL)",
        shared_by="every AIV stage (V1, nUpdate, V2) of both kernel variants; serving attention",
        how="solved so that the baseline's Vector period (per block, 128 heads, s_q=2) equals "
            "34,816 MAC-cycles / (0.654 x 376/353.9); see predictions.calibrate_gm_latency")
    hbm_efficiency: float = calibrated(
        0.864, unit="fraction of the HBM peak",
        against="platform-ini ddr_rate=32 B/cycle/core x 24 cores x 1.8 GHz / 1.6 TB/s (the 910C's DMA-"
                "achievable fraction); cross-checked by cm384 §5.5.2: memory-bound MLA at 1,346 of 1,600 GB/s",
        shared_by="the 910C HBM roof (serving weight and KV streams) and the H800 roofline (FlashMLA 3000 GB/s)",
        how="32 x 24 x 1.8e9 / 1.6e12; applied unchanged to the H800's 3.35 TB/s")
    h800_tensor_efficiency: float = calibrated(
        0.80, unit="fraction of the throttled peak",
        against="flashmla deep-dive: 'up to 80% Tensor Core utilization (of the throttled theoretical peak)'",
        shared_by="FlashMLA compute-bound prediction (660 TFLOPS, 66.7% of peak)",
        how="taken as stated; the 660 TFLOPS and 66.7% rows are then predictions of the roofline")


ASCEND_910C_DIE = AscendDie()
ASCEND_910C = AscendPackage()
H800_SXM5 = Gpu()
CALIBRATION = Calibration()


def provenance(obj: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Return one row per numeric field of a machine or calibration: name, value, unit, basis, source, note.

    A field whose value differs from its documented default is marked ``basis="override"``,
    so a report never passes a user's change off as a cited number.
    """
    if not is_dataclass(obj):
        raise TypeError(f"obj: expected a machine or calibration dataclass, got {type(obj).__name__}")
    rows = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            rows.extend(provenance(value, prefix=f"{prefix}{f.name}."))
            continue
        if "basis" not in f.metadata:
            continue
        default = f.default if f.default is not MISSING else None
        basis = f.metadata["basis"] if value == default else "override"
        rows.append({"name": prefix + f.name, "value": value, "unit": f.metadata["unit"], "basis": basis,
                     "source": f.metadata["source"], "note": f.metadata["note"],
                     "shared_by": f.metadata.get("shared_by", "")})
    return rows

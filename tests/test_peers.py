"""Real peers: PyTorch SDPA (CPU), ONNX's reference Attention, ONNX Runtime's CPU Attention.

Each is an optional package; a missing one skips its tests with the reason. Convention
mapping is done by the adapters in reference/conformance.py (docs/conformance.md).
"""

import importlib

import pytest

from attnspec.reference.conformance import onnx_reference, onnxruntime_attention, torch_sdpa
from attnspec.reference.harness import check


def _peer(make, *packages, **kwargs):
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"peer needs the optional package {package!r} (pip install 'attnspec[peers]' or '[torch]')")
    return make(**kwargs)


PEERS = [pytest.param(torch_sdpa, ("torch",), {}, id="torch-sdpa")]
PEERS += [pytest.param(onnx_reference, ("onnx",), {"opset": o}, id=f"onnx-reference-{o}") for o in (23, 24, 25)]
PEERS += [pytest.param(onnxruntime_attention, ("onnx", "onnxruntime"), {"opset": o}, id=f"onnxruntime-{o}")
          for o in (23, 24, 25)]


@pytest.mark.parametrize("make, packages, kwargs", PEERS)
@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16"])
def test_peer_passes_the_harness(make, packages, kwargs, fmt):
    peer = _peer(make, *packages, **kwargs)
    if fmt not in [str(f) for f in peer.kernel.formats]:
        pytest.skip(f"{peer.kernel.name} does not support {fmt}")
    report = check(peer.kernel, op="attention", dtype=fmt, examples=3, save=False)
    assert report.ok, report.summary()


@pytest.mark.parametrize("make, packages, kwargs", PEERS)
def test_peer_with_the_wrong_alignment_is_flagged(make, packages, kwargs):
    """A peer declared with the other causal alignment than it has must fail: the mapping matters."""
    from dataclasses import replace
    peer = _peer(make, *packages, **kwargs)
    flipped = {"bottom_right": "top_left", "top_left": "bottom_right"}[peer.kernel.causal_alignment]
    report = check(replace(peer.kernel, causal_alignment=flipped), op="attention", dtype="fp32", examples=2,
                   save=False, fail_fast=True)
    assert not report.ok

"""The roofline floor: compute-bound and memory-bound layers, and the row it fills in."""

import pytest
import torch

from im2win.bench.measure import MIB
from im2win.bench.roofline import Ceilings, measure_ceilings
from im2win.bench.run import _roofline
from im2win.bench.tiers import TIERS

CEILINGS = Ceilings(tflops={"bf16": 800.0}, copy_gbps=3000.0)


def test_floor_is_the_larger_of_compute_and_copy_time():
    # 800 GFLOP at 800 TFLOPS: 1 ms; 300 MB at 3000 GB/s: 0.1 ms -> compute-bound.
    assert CEILINGS.floor_ms(800e9, 300e6, "bf16") == pytest.approx(1.0)
    # 8 GFLOP: 0.01 ms; 3 GB: 1 ms -> memory-bound.
    assert CEILINGS.floor_ms(8e9, 3e9, "bf16") == pytest.approx(1.0)


def test_roofline_fields_of_a_row():
    row = {"flop": 800e9, "tflops": 400.0, "input_mib": 100e6 / MIB, "weight_mib": 0.0,
           "output_mib": 200e6 / MIB}  # fmt: skip
    fields = _roofline(row, TIERS["bf16"], CEILINGS)
    assert fields["roofline_tflops"] == pytest.approx(800.0)
    assert fields["pct_of_roofline"] == pytest.approx(50.0)
    assert (fields["ceiling_tflops"], fields["copy_gbps"]) == (800.0, 3000.0)


def test_no_roofline_without_a_gpu():
    assert measure_ceilings(list(TIERS.values()), torch.device("cpu"), timer=None) is None

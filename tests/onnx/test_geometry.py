"""Random convolution geometries through export (onnxruntime) and import (round trip):
rectangular kernels, per-axis stride and dilation, asymmetric padding, groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnnblas import nn
from tests.conftest import conv_cases

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnnblas.onnx import load, to_onnx  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None)


def check_both_ways(model, x, tmp_path, runtime=True):
    """onnxruntime on the exported graph (when ``runtime``), and the re-imported module,
    give ``model(x)``."""
    expected = model.eval()(x)
    proto = to_onnx(model, x.shape[1:])
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    if runtime:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        scale = max(float(np.abs(expected).max()), 1e-6)
        assert np.abs(session.run(None, {"input": x})[0] - expected).max() <= 1e-4 * scale
    np.testing.assert_array_equal(load(path)(x), expected)


@SETTINGS
@given(case=conv_cases())
def test_conv2d_geometries(case, tmp_path_factory):
    model = nn.Sequential(nn.Conv2d(case.c, case.k, case.kernel, stride=case.stride,
                                    padding=case.padding, dilation=case.dilation,
                                    groups=case.groups, rng=0))
    x = case.arrays(np.float32)[0]
    check_both_ways(model, x, tmp_path_factory.mktemp("conv"))


@SETTINGS
@given(case=conv_cases(symmetric_padding=True), data=st.data())
def test_conv_transpose2d_geometries(case, data, tmp_path_factory):
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(case.stride, case.dilation, strict=True))
    model = nn.Sequential(nn.ConvTranspose2d(
        case.c, case.k, case.kernel, stride=case.stride,
        padding=(case.padding[0][0], case.padding[1][0]), output_padding=output_padding,
        dilation=case.dilation, groups=case.groups, rng=0))
    x = case.arrays(np.float32)[0]
    try:
        model.eval()(x)
    except ValueError:  # padding cuts the whole output away
        assume(False)
    # onnxruntime refuses an output_padding (left after the end padding) not below the
    # stride, which PyTorch and ONNX allow up to the dilation: only the import is checked.
    runtime = all(out_pad - min(out_pad, pad[0]) < stride for out_pad, pad, stride
                  in zip(output_padding, case.padding, case.stride, strict=True))
    check_both_ways(model, x, tmp_path_factory.mktemp("convt"), runtime)

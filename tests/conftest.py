"""Shared test helpers: random convolution geometries and tolerances."""

from __future__ import annotations

import os

# The worker-thread tests need two Numba threads; Numba's default is the core
# count, so on a one-core runner they would all skip. Set before Numba loads.
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: The source checkout's root, and the shared real-MNIST sample beside it (tests
#: that need it skip when it is absent).
REPO = Path(__file__).resolve().parents[1]
MNIST5K = (REPO / ".." / "shared" / "data" / "mnist5k").resolve()


@dataclass(frozen=True)
class ConvCase:
    """One convolution problem, with fully explicit geometry."""

    n: int
    c: int
    h: int
    w: int
    k: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))
    dilation: tuple[int, int]
    groups: int

    @property
    def out_size(self) -> tuple[int, int]:
        (top, bottom), (left, right) = self.padding
        return (
            (self.h + top + bottom - self.dilation[0] * (self.kernel[0] - 1) - 1)
            // self.stride[0] + 1,
            (self.w + left + right - self.dilation[1] * (self.kernel[1] - 1) - 1)
            // self.stride[1] + 1,
        )

    @property
    def symmetric(self) -> bool:
        return self.padding[0][0] == self.padding[0][1] and self.padding[1][0] == self.padding[1][1]

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, dtype=np.float64, seed=0):
        """Random x (N,C,H,W), weight (K,C/g,kh,kw), bias (K,), dy (N,K,P,Q)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.c, self.h, self.w)).astype(dtype)
        weight = rng.standard_normal((self.k, self.c // self.groups, *self.kernel)).astype(dtype)
        bias = rng.standard_normal(self.k).astype(dtype)
        dy = rng.standard_normal((self.n, self.k, *self.out_size)).astype(dtype)
        return x, weight, bias, dy


@st.composite
def conv_cases(draw, max_extra: int = 6, max_kernel: int = 4,
               symmetric_padding: bool = False) -> ConvCase:
    """Random geometry: rectangular kernels, per-axis stride/dilation, asymmetric
    padding, groups (depthwise included), sizes not divisible by the stride."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if symmetric_padding:  # PyTorch's functions take one padding per axis
        padding = tuple((p, p) for p in (draw(st.integers(0, 2)), draw(st.integers(0, 2))))
    else:
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    size = []
    for axis in range(2):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = max(1, extent - sum(padding[axis]))
        size.append(draw(st.integers(smallest, smallest + max_extra)))
    return ConvCase(draw(st.integers(1, 2)), c, size[0], size[1], k, kernel, stride,
                    padding, dilation, groups)


# Hand-picked edges that random draws could miss; each is named for what it covers.
EDGE_CASES = {
    "batch1_one_channel": ConvCase(1, 1, 5, 5, 1, (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "non_square_image": ConvCase(2, 2, 4, 9, 3, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "rect_kernel_stride2": ConvCase(2, 3, 7, 8, 2, (2, 3), (2, 2), ((1, 1), (0, 0)), (1, 1), 1),
    "stride_not_dividing": ConvCase(1, 2, 8, 8, 2, (3, 3), (3, 3), ((0, 0), (0, 0)), (1, 1), 1),
    "per_axis_stride": ConvCase(1, 2, 9, 7, 2, (3, 2), (2, 1), ((1, 1), (0, 0)), (1, 1), 1),
    "dilation2": ConvCase(2, 2, 9, 9, 3, (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    "asymmetric_padding": ConvCase(1, 2, 5, 6, 2, (3, 3), (2, 1), ((0, 2), (1, 0)), (1, 1), 1),
    "kernel_as_large_as_padded_input": ConvCase(2, 2, 3, 4, 2, (5, 6), (1, 1),
                                                ((1, 1), (1, 1)), (1, 1), 1),
    "pointwise_1x1": ConvCase(2, 6, 5, 4, 4, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "pointwise_1x1_stride2": ConvCase(2, 4, 5, 5, 3, (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),
    "pointwise_1x1_groups": ConvCase(1, 6, 3, 5, 4, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 2),
    "groups2": ConvCase(2, 4, 6, 6, 6, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
    "depthwise": ConvCase(2, 4, 6, 5, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),
    "depthwise_multiplier2": ConvCase(1, 3, 6, 6, 6, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 3),
    "one_output_pixel": ConvCase(1, 2, 4, 4, 3, (4, 4), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
}


def assert_close(actual, expected, rtol=1e-10, err_msg=""):
    """Relative comparison scaled by the largest magnitude (robust near zeros)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale, err_msg=err_msg)


@pytest.fixture
def two_threads(monkeypatch):
    """Two threads, and no serial shortcut for batches: every call on two or more
    images takes the worker path (one image under ``INTRA_STEP_FLOPS`` still runs
    serially; set that to 0 as well to force the intra-step path)."""
    import cnnblas as cb
    from cnnblas.ops import parallel

    if cb.threads.max_threads() < 2:
        pytest.skip("needs 2 Numba threads")
    monkeypatch.setattr(parallel, "SERIAL_FLOPS", 0)
    old = cb.get_num_threads()
    cb.set_num_threads(2)
    yield
    cb.set_num_threads(old)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def shm_segments() -> set[str]:
    """The shared segments of cnnblas's process launcher now in /dev/shm (empty where
    there is no /dev/shm): a run must leave none behind."""
    from cnnblas.distributed.launch import SEGMENT_PREFIX

    directory = Path("/dev/shm")
    if not directory.is_dir():
        return set()
    return {path.name for path in directory.glob(SEGMENT_PREFIX + "*")}

"""Batch-parallel execution: the same numbers whatever the thread count and split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import cnnblas as cb
from cnnblas import reference
from cnnblas.ops import parallel
from tests.conftest import ConvCase, assert_close, conv_cases


@pytest.mark.parametrize("n_images, n_parts", [(1, 1), (5, 2), (6, 3), (7, 7), (10, 4)])
def test_image_ranges_cover_the_batch_evenly(n_images, n_parts):
    ranges = parallel.image_ranges(n_images, n_parts)
    assert len(ranges) == n_parts
    assert ranges[0][0] == 0 and ranges[-1][1] == n_images
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [stop - start for start, stop in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_batch_workers_policy(two_threads):
    assert parallel.batch_workers(1) == 1  # one image: parallel inside each step
    assert parallel.batch_workers(2) == 2
    assert parallel.batch_workers(64) == 2


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_two_threads_match_one_thread(case):
    """Uneven splits (N = 3, 5) through the worker threads: identical up to rounding."""
    if cb.threads.max_threads() < 2:
        pytest.skip("needs 2 Numba threads")
    old, old_serial = cb.get_num_threads(), parallel.SERIAL_FLOPS
    for n in (3, 5):
        big = ConvCase(n, case.c, case.h, case.w, case.k, case.kernel, case.stride,
                       case.padding, case.dilation, case.groups)
        x, weight, bias, dy = big.arrays()
        results = []
        try:
            parallel.SERIAL_FLOPS = 0  # these shapes are small: force the worker path
            for threads in (1, 2):
                cb.set_num_threads(threads)
                results.append((cb.conv2d(x, weight, bias, **big.kwargs()),
                                *cb.conv2d_backward(dy, x, weight, **big.kwargs())))
        finally:
            cb.set_num_threads(old)
            parallel.SERIAL_FLOPS = old_serial
        for one, two in zip(*results, strict=True):
            assert_close(two, one, rtol=1e-12)
        expected = reference.conv2d_direct(x, weight, bias, **big.kwargs())
        assert_close(results[1][0], expected)


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("algorithm", ["winograd2x2", "winograd4x4"])
def test_winograd_batch_parallel_matches_serial(two_threads, monkeypatch, algorithm, input_grad):
    # The layer is below SERIAL_FLOPS: without this it would never reach the workers.
    monkeypatch.setattr(parallel, "SERIAL_FLOPS", 0)
    split = []
    monkeypatch.setattr(parallel, "image_ranges",
                        lambda n, parts, real=parallel.image_ranges: split.append(n)
                        or real(n, parts))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 16, 9, 7))
    weight = rng.standard_normal((16, 16, 3, 3))
    dy = rng.standard_normal((5, 16, 9, 7))
    y2 = cb.conv2d(x, weight, padding=1, algorithm=algorithm)
    g2 = cb.conv2d_backward(dy, x, weight, padding=1, algorithm=algorithm,
                            input_grad=input_grad)
    assert split == [5, 5]  # the forward and the backward were split across workers
    cb.set_num_threads(1)
    assert_close(y2, cb.conv2d(x, weight, padding=1, algorithm=algorithm), rtol=1e-12)
    g1 = cb.conv2d_backward(dy, x, weight, padding=1, algorithm=algorithm,
                            input_grad=input_grad)
    assert (g2[0] is None) == (not input_grad)
    for two, one in zip(g2, g1, strict=True):
        if one is not None:
            assert_close(two, one, rtol=1e-12)
    expected = reference.conv2d_backward_direct(dy, x, weight, stride=1, padding=1, dilation=1,
                                                groups=1)
    for two, want in zip(g2, expected, strict=True):
        if two is not None:
            assert_close(two, want)


def test_worker_error_reaches_the_caller_and_blas_is_restored(two_threads):
    def fails_on_second_range(start, stop, serial):
        if start > 0:
            raise RuntimeError(f"boom in [{start}, {stop})")
        return start

    with pytest.raises(RuntimeError, match=r"boom in \[2, 4\)"):
        parallel.map_image_ranges(fails_on_second_range, 4)
    blas = [lib for lib in cb.threads.blas_info() if lib["user_api"] == "blas"]
    assert all(lib["num_threads"] == 2 for lib in blas)


def test_worker_path_is_taken_and_matches_the_reference(two_threads, monkeypatch):
    calls = []
    original = parallel.image_ranges
    monkeypatch.setattr(parallel, "image_ranges",
                        lambda n, parts: calls.append((n, parts)) or original(n, parts))
    case = ConvCase(7, 4, 6, 5, 3, (3, 3), (1, 1), ((1, 0), (0, 1)), (1, 1), 1)
    x, weight, bias, dy = case.arrays()
    assert_close(cb.conv2d(x, weight, bias, **case.kwargs()),
                 reference.conv2d_direct(x, weight, bias, **case.kwargs()))
    assert calls == [(7, 2)]


def test_small_calls_run_once_serially_with_one_blas_thread(two_threads, monkeypatch):
    monkeypatch.setattr(parallel, "SERIAL_FLOPS", 1e9)
    seen = []

    def record(start, stop, serial):
        blas = [lib["num_threads"] for lib in cb.threads.blas_info()
                if lib["user_api"] == "blas"]
        seen.append((start, stop, serial, set(blas)))

    parallel.map_image_ranges(record, 8, flops=1e6)
    assert seen == [(0, 8, True, {1})]
    blas = {lib["num_threads"] for lib in cb.threads.blas_info() if lib["user_api"] == "blas"}
    assert blas == {2}  # restored afterwards


def test_thread_setting_holds_in_other_python_threads(two_threads):
    import threading

    cb.set_num_threads(1)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(
        (cb.get_num_threads(), parallel.batch_workers(8))))
    thread.start()
    thread.join()
    assert seen == [(1, 1)]


def test_overlapping_single_thread_sections_restore_the_setting(two_threads):
    outer = cb.threads.single_threaded_blas()
    inner = cb.threads.single_threaded_blas()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first to leave must not restore yet
    blas = {lib["num_threads"] for lib in cb.threads.blas_info() if lib["user_api"] == "blas"}
    assert blas == {1}
    inner.__exit__(None, None, None)
    blas = {lib["num_threads"] for lib in cb.threads.blas_info() if lib["user_api"] == "blas"}
    assert blas == {2}


def test_one_image_runs_serially_below_the_intra_step_threshold(two_threads):
    """With fewer images than threads, a call under INTRA_STEP_FLOPS runs in the
    calling thread on the serial kernels with BLAS at one thread; a larger one
    may use Numba's pool and multi-threaded BLAS."""
    from cnnblas import threads

    seen = []

    def record(start, stop, serial):
        blas = [lib["num_threads"] for lib in threads.blas_info() if lib["user_api"] == "blas"]
        seen.append((start, stop, serial, max(blas)))

    parallel.map_image_ranges(record, 1, flops=parallel.INTRA_STEP_FLOPS / 2)
    parallel.map_image_ranges(record, 1, flops=parallel.INTRA_STEP_FLOPS * 2)
    assert seen[0] == (0, 1, True, 1)
    assert seen[1][:3] == (0, 1, False)
    assert seen[1][3] == 2

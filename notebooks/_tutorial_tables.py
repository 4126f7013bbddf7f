"""Small helpers shared by the notebooks that reproduce the tutorial's tables.

The notebooks type the values printed in "A beginner tutorial for CNN"
(E. E. Jiménez Lepe and A. Méndez Vázquez, 2016) by hand and compare them with
what cnnblas computes. This module only prints, draws and re-orders arrays; it
never produces a table value itself.

Two orderings meet in these notebooks:

- cnnblas (like ``torch.nn.functional.unfold``) orders im2col rows by
  (channel, kernel row, kernel column) and columns by output position, both
  row-major (C order);
- the tutorial uses Octave's ``im2col``, which walks every 2-D block and the
  output positions column-major (Fortran order), one channel after another.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_nchw", "rot180", "compare", "octave_rows", "octave_cols", "to_octave",
    "symbolic_im2col", "print_symbolic", "draw_windows", "agree",
]


def as_nchw(values) -> np.ndarray:
    """Typed table values -> float64 array of rank 4 (missing leading axes become 1)."""
    a = np.asarray(values, dtype=np.float64)
    while a.ndim < 4:
        a = a[None]
    return a


def rot180(w: np.ndarray) -> np.ndarray:
    """Rotate every 2-D kernel (the last two axes) by 180 degrees."""
    return np.ascontiguousarray(np.asarray(w)[..., ::-1, ::-1])


# --------------------------------------------------------------------------- printing
def _text(a: np.ndarray, precision: int) -> list[str]:
    """Lines of text for an array; leading axes become stacked 2-D blocks."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2:
        a = a.reshape(1, -1)
    blocks = a.reshape(-1, a.shape[-2], a.shape[-1])
    lines: list[str] = []
    for b, block in enumerate(blocks):
        if b:
            lines.append("")
        text = np.array2string(block, precision=precision, separator=" ",
                               max_line_width=10_000, suppress_small=False)
        lines.extend(text.splitlines())
    return lines


def compare(title: str, printed, ours, *, rtol: float = 1e-7, atol: float = 0.0,
            precision: int = 6, label: str = "tutorial (as printed)") -> None:
    """Print the tutorial's values beside cnnblas's and assert that they agree.

    ``printed`` is what the tutorial shows (typed by hand), ``ours`` what the
    library computed; ``label`` heads the left column. Unit axes are squeezed
    away before comparing; the remaining shapes must be equal.
    """
    printed = np.squeeze(np.asarray(printed, dtype=np.float64))
    ours = np.squeeze(np.asarray(ours, dtype=np.float64))
    left = [label] + _text(printed, precision)
    right = ["cnnblas"] + _text(ours, precision)
    width = max(len(s) for s in left) + 4
    print(title)
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print("  " + a.ljust(width) + b)
    assert printed.shape == ours.shape, f"{title}: shapes {printed.shape} vs {ours.shape}"
    diff = float(np.max(np.abs(printed - ours))) if printed.size else 0.0
    np.testing.assert_allclose(ours, printed, rtol=rtol, atol=atol, err_msg=title)
    print(f"  -> agree (max |difference| = {diff:.3g})\n")


def agree(title: str, ours, independent, *, rtol: float = 1e-12, atol: float = 0.0) -> float:
    """Assert that cnnblas's array matches an independent computation; print one line.

    For arrays too large to print beside each other (:func:`compare` prints
    both). Returns the largest absolute difference.
    """
    ours = np.asarray(ours, dtype=np.float64)
    independent = np.asarray(independent, dtype=np.float64)
    assert ours.shape == independent.shape, f"{title}: shapes {ours.shape} vs {independent.shape}"
    np.testing.assert_allclose(ours, independent, rtol=rtol, atol=atol, err_msg=title)
    diff = float(np.max(np.abs(ours - independent)))
    scale = float(np.max(np.abs(independent)))
    print(f"{title}: agree, max |difference| {diff:.2g} (max |value| {scale:.3g})")
    return diff


# ---------------------------------------------------------------------------- orders
def octave_rows(channels: int, kh: int, kw: int) -> np.ndarray:
    """Row permutation: Octave's im2col row r is cnnblas's row ``octave_rows(...)[r]``.

    Inside each channel block Octave walks the kernel window column-major
    (kernel row index fastest); cnnblas walks it row-major.
    """
    return np.arange(channels * kh * kw).reshape(channels, kh, kw).transpose(0, 2, 1).ravel()


def octave_cols(out_h: int, out_w: int) -> np.ndarray:
    """Column permutation: Octave's column q is cnnblas's column ``octave_cols(...)[q]``."""
    return np.arange(out_h * out_w).reshape(out_h, out_w).T.ravel()


def to_octave(cols: np.ndarray, channels: int, kernel, out_hw) -> np.ndarray:
    """Re-order one image's cnnblas im2col matrix (C*kh*kw, L) into Octave's order."""
    kh, kw = kernel
    return cols[octave_rows(channels, kh, kw)][:, octave_cols(*out_hw)]


# -------------------------------------------------------------------------- symbolic
def symbolic_im2col(im2col, channels: int, height: int, width: int, kernel_size,
                    stride=1, padding=0, dilation=1):
    """Run ``im2col`` on an image whose pixels encode their own index.

    Pixel ``x[c, i, j]`` holds ``1 + (c*H + i)*W + j``; padding contributes 0.
    Decoding every entry of the returned columns gives the label ``x[c,i,j]``
    (or ``0`` for a padded zero) that im2col copied to that place.
    Returns ``(labels, cols)``: a string array and the numeric columns.
    """
    codes = np.arange(1, channels * height * width + 1, dtype=np.float64)
    image = codes.reshape(1, channels, height, width)
    cols = im2col(image, kernel_size, stride=stride, padding=padding, dilation=dilation)[0]
    labels = np.empty(cols.shape, dtype=object)
    for idx, value in np.ndenumerate(cols):
        if value == 0:
            labels[idx] = "0"
        else:
            c, i, j = np.unravel_index(int(value) - 1, (channels, height, width))
            labels[idx] = f"x[{c},{i},{j}]"
    return labels, cols


def print_symbolic(labels, out_w: int, kernel) -> None:
    """Print a symbolic im2col matrix with row and column headers."""
    kh, kw = kernel
    rows, n_cols = labels.shape
    heads = [f"({q // out_w},{q % out_w})" for q in range(n_cols)]
    width = max(max(len(s) for s in labels.ravel()), max(len(h) for h in heads)) + 2
    print("row (c,ki,kj)".ljust(14) + "".join(h.rjust(width) for h in heads))
    for r in range(rows):
        c, rest = divmod(r, kh * kw)
        i, j = divmod(rest, kw)
        print(f"{r:2d} ({c},{i},{j})".ljust(14) + "".join(s.rjust(width) for s in labels[r]))


# ---------------------------------------------------------------------------- pictures
def draw_windows(image: np.ndarray, kernel: int, stride: int, title: str, padding: int = 0):
    """One small panel per window position: the image with that window outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = np.pad(np.asarray(image, dtype=np.float64), padding)
    h, w = img.shape
    out_h = (h - kernel) // stride + 1
    out_w = (w - kernel) // stride + 1
    fig, axes = plt.subplots(out_h, out_w, figsize=(1.35 * out_w, 1.35 * out_h),
                             squeeze=False)
    for oh in range(out_h):
        for ow in range(out_w):
            ax = axes[oh, ow]
            ax.imshow(np.zeros_like(img), cmap="Greys", vmin=0, vmax=1)
            for i in range(h):
                for j in range(w):
                    inside = (oh * stride <= i < oh * stride + kernel
                              and ow * stride <= j < ow * stride + kernel)
                    ax.text(j, i, f"{img[i, j]:g}", ha="center", va="center", fontsize=7,
                            color="black" if inside else "0.6",
                            fontweight="bold" if inside else "normal")
            ax.add_patch(Rectangle((ow * stride - 0.5, oh * stride - 0.5), kernel, kernel,
                                   fill=True, alpha=0.25, color="tab:orange", lw=0))
            ax.add_patch(Rectangle((ow * stride - 0.5, oh * stride - 0.5), kernel, kernel,
                                   fill=False, color="tab:red", lw=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"out ({oh},{ow})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig

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
    "symbolic_im2col", "print_symbolic", "draw_windows", "draw_im2col", "draw_gather_scatter",
    "draw_network", "agree", "MAX_LINE", "COLUMN_FROM",
]

MAX_LINE = 120      # no printed line of a notebook is wider (tests/test_notebooks.py checks it)
COLUMN_FROM = 5     # 1-D arrays with this many entries or more print as a column (the ".T" layout)


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
    away before comparing; the remaining shapes must be equal. A vector of
    ``COLUMN_FROM`` entries or more is printed as a column, as the tutorial
    prints its 10-vectors (``X4.T``, ``Output.T``); two tables too wide to
    stand side by side within ``MAX_LINE`` characters are printed one above
    the other.
    """
    printed = np.squeeze(np.asarray(printed, dtype=np.float64))
    ours = np.squeeze(np.asarray(ours, dtype=np.float64))

    def shown(a):
        return a.reshape(-1, 1) if a.ndim == 1 and a.size >= COLUMN_FROM else a

    left = [label] + _text(shown(printed), precision)
    right = ["cnnblas"] + _text(shown(ours), precision)
    width = max(len(s) for s in left) + 4
    print(title)
    if 2 + width + max(len(s) for s in right) > MAX_LINE:     # too wide side by side: stack
        for line in left + [""] + right:
            print("  " + line)
    else:
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


def _grid(ax, values, x0, y0, *, texts=None, colors=None, fontsize=7):
    """Draw a 2-D array as a grid of labelled cells with its top-left cell at (x0, y0)."""
    from matplotlib.patches import Rectangle

    values = np.asarray(values)
    for (i, j), v in np.ndenumerate(values):
        face = "white" if colors is None or colors[i][j] is None else colors[i][j]
        ax.add_patch(Rectangle((x0 + j - 0.5, y0 + i - 0.5), 1, 1, facecolor=face,
                               edgecolor="0.6", lw=0.6))
        text = f"{v:g}" if texts is None else texts[i][j]
        ax.text(x0 + j, y0 + i, text, ha="center", va="center", fontsize=fontsize)


def _label_matrix(ax, shape, out_w: int, kernel, xlabel: str) -> None:
    """Frame a drawn im2col matrix: rows named (c, i, j), columns (oh, ow) on top."""
    rows, n_cols = shape
    kh, kw = kernel
    ax.set_aspect("equal")
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xticks(range(n_cols), [f"({q // out_w},{q % out_w})" for q in range(n_cols)],
                  fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks(range(rows), [f"({r // (kh * kw)},{r // kw % kh},{r % kw})"
                                for r in range(rows)], fontsize=7)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(length=0)


def draw_im2col(image: np.ndarray, cols: np.ndarray, kernel: int, stride: int = 1):
    """Windows becoming columns: each window of ``image`` and the im2col matrix ``cols``.

    ``image`` is one image (C, H, W); ``cols`` its im2col matrix (C*k*k, L) as
    cnnblas returns it. Left: one small panel per output position (oh, ow), the
    window it reads outlined in the colour of its column. Right: ``cols``, rows
    labelled (c, i, j) (channel, kernel row, kernel column), columns (oh, ow).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    image = np.asarray(image, dtype=np.float64)
    c_in, h, w = image.shape
    out_h, out_w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    palette = plt.get_cmap("tab10").colors
    fig = plt.figure(figsize=(9.5, 0.3 * cols.shape[0] + 0.9))
    grid = fig.add_gridspec(out_h, out_w + 1, width_ratios=[c_in * (w + 1)] * out_w
                            + [1.6 * cols.shape[1] + 3])
    for oh in range(out_h):
        for ow in range(out_w):
            q = oh * out_w + ow
            ax = fig.add_subplot(grid[oh, ow])
            for c in range(c_in):
                x0 = c * (w + 1)
                tint = [[palette[q % 10] + (0.25,)
                         if oh * stride <= i < oh * stride + kernel
                         and ow * stride <= j < ow * stride + kernel else None
                         for j in range(w)] for i in range(h)]
                _grid(ax, image[c], x0, 0, colors=tint, fontsize=6)
                ax.add_patch(Rectangle((x0 + ow * stride - 0.5, oh * stride - 0.5), kernel,
                                       kernel, fill=False, edgecolor=palette[q % 10], lw=2))
                ax.text(x0 + (w - 1) / 2, h - 0.1, f"c={c}", ha="center", va="top", fontsize=6)
            ax.set_xlim(-0.7, c_in * (w + 1) - 1.3)
            ax.set_ylim(h + 0.6, -0.7)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(f"window -> column ({oh},{ow})", fontsize=7, color=palette[q % 10])
    ax = fig.add_subplot(grid[:, out_w])
    rows, n_cols = cols.shape
    tint = [[palette[q % 10] + (0.25,) for q in range(n_cols)] for _ in range(rows)]
    _grid(ax, cols, 0, 0, colors=tint, fontsize=7)
    _label_matrix(ax, cols.shape, out_w, (kernel, kernel),
                  "columns: output position (oh, ow)\nrows (c, i, j): channel, kernel row,"
                  " kernel column")
    fig.suptitle(f"im2col: each window becomes one column ({rows} x {n_cols})", fontsize=9)
    return fig


def draw_gather_scatter(counts: np.ndarray, labels: np.ndarray, pixel, out_w: int, kernel):
    """im2col copies a pixel into several columns; col2im adds the copies back.

    ``counts`` (H, W): how many columns each pixel lands in; ``labels``: a
    symbolic im2col matrix of one channel (see ``symbolic_im2col``); ``pixel``:
    the (i, j) whose copies get arrows. Left: the count map; right: the matrix
    with that pixel's copies highlighted and the kernel tap of each copy named.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import ConnectionPatch

    kh, kw = kernel
    pi, pj = pixel
    name = f"x[0,{pi},{pj}]"
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.3),
                                      gridspec_kw=dict(width_ratios=[1, 1.5]))
    counts = np.asarray(counts).astype(int)
    h, w = counts.shape
    tint = [["tab:orange" if (i, j) == (pi, pj) else plt.get_cmap("Blues")(0.15 * counts[i, j])
             for j in range(w)] for i in range(h)]
    _grid(left, counts, 0, 0, colors=tint,
          texts=[[f"x[0,{i},{j}]\n{counts[i, j]} cop{'y' if counts[i, j] == 1 else 'ies'}"
                  for j in range(w)] for i in range(h)], fontsize=7)
    left.set_aspect("equal")
    left.set_xlim(-0.5, w - 0.5)
    left.set_ylim(h - 0.5, -0.5)
    left.axis("off")
    left.set_title("input: copies of each pixel in im2col\n"
                   "= number of terms col2im adds back", fontsize=8)
    rows, n_cols = labels.shape
    hits = labels == name
    tint = [["tab:orange" if hits[r, q] else "white" for q in range(n_cols)]
            for r in range(rows)]
    texts = [[labels[r, q] + (f"\ntap ({r // kw},{r % kw})" if hits[r, q] else "")
              for q in range(n_cols)] for r in range(rows)]
    _grid(right, np.zeros(labels.shape), 0, 0, colors=tint, texts=texts, fontsize=6.5)
    _label_matrix(right, labels.shape, out_w, kernel,
                  "rows (c, i, j): channel, kernel tap; columns: output position (oh, ow)")
    for r, q in np.argwhere(hits):
        fig.add_artist(ConnectionPatch((pj + 0.45, pi), (q - 0.45, r), "data", "data",
                                       axesA=left, axesB=right, arrowstyle="->",
                                       color="tab:red", lw=1.0))
    right.set_title(f"im2col (gather): {name} is copied into {hits.sum()} columns;\n"
                    "col2im (scatter-add): the red arrows run backwards and add", fontsize=8)
    fig.tight_layout()
    return fig


def draw_network(blocks, title: str = ""):
    """A block diagram: ``blocks`` is a list of (name, detail, output shape) strings."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n = len(blocks)
    fig, ax = plt.subplots(figsize=(1.12 * n, 1.7))
    for k, (name, detail, shape) in enumerate(blocks):
        x = 1.25 * k
        ax.add_patch(FancyBboxPatch((x, 0.3), 1.0, 0.9, boxstyle="round,pad=0.03",
                                    facecolor="#dbe8f6", edgecolor="tab:blue"))
        ax.text(x + 0.5, 0.92, name, ha="center", va="center", fontsize=8, weight="bold")
        ax.text(x + 0.5, 0.58, detail, ha="center", va="center", fontsize=6.5)
        ax.text(x + 0.5, 0.12, shape, ha="center", va="center", fontsize=7, color="tab:red")
        if k:
            ax.annotate("", xy=(x - 0.02, 0.75), xytext=(x - 0.23, 0.75),
                        arrowprops=dict(arrowstyle="->", lw=1))
    ax.set_xlim(-0.1, 1.25 * n - 0.15)
    ax.set_ylim(-0.05, 1.3)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig

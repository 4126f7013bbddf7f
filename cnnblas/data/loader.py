"""Mini-batch iteration over in-memory arrays, with reproducible, resumable shuffling."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from cnnblas.checks import check_bool, check_int

__all__ = ["DataLoader"]

_SEED_WORDS = 4  # the loader's seed is stored as 4 uint32 words (128 bits)


class DataLoader:
    """Iterate over ``(x, y)`` in mini-batches, optionally shuffled per epoch.

    Every ``iter(loader)`` (every ``for`` loop over it) starts a new epoch.
    With ``shuffle=True`` epoch ``e`` visits the samples in a permutation drawn
    from a generator seeded by ``(seed, e)``: the same seed gives the same
    sequence of epochs, and each epoch gets a different permutation. Every
    sample appears exactly once per epoch (except the last incomplete batch
    when ``drop_last=True``).

    Parameters
    ----------
    x : numpy.ndarray, shape (N, ...)
        Inputs, e.g. images (N, C, H, W).
    y : numpy.ndarray, shape (N, ...)
        Targets, e.g. int64 labels (N,).
    batch_size : int
        Samples per batch, >= 1.
    shuffle : bool, default False
        Visit the samples in a new random order each epoch.
    seed : int or None, default None
        Seed of the shuffling (a non-negative int); ``None`` draws fresh
        entropy from the operating system (still restorable through
        :meth:`state_dict`).
    drop_last : bool, default False
        Drop the last batch of an epoch when it has fewer than ``batch_size``
        samples.

    Yields
    ------
    xb : numpy.ndarray, shape (B, ...)
        ``x``'s rows of the batch, same dtype; ``B <= batch_size``. Without
        shuffling these are views into ``x`` (do not modify them in place);
        with shuffling, new contiguous arrays.
    yb : numpy.ndarray, shape (B, ...)
        The matching rows of ``y``.

    Notes
    -----
    :meth:`state_dict` records the seed, the epoch and how many batches of the
    current epoch were already yielded. After :meth:`load_state_dict`, the next
    ``iter()`` yields the rest of that epoch, exactly as the saved iterator
    would have continued, and later epochs match too. An epoch whose batches
    were all yielded is complete, so a state saved between epochs resumes at
    the start of the next epoch.

    Examples
    --------
    >>> import numpy as np
    >>> x, y = np.zeros((100, 1, 8, 8), np.float32), np.arange(100) % 10
    >>> loader = DataLoader(x, y, batch_size=64, shuffle=True, seed=0)
    >>> [len(yb) for xb, yb in loader]  # one epoch: every sample once, in a new order
    [64, 36]
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool = False, seed: int | None = None,
                 drop_last: bool = False):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(
                f"x and y must have a leading sample axis, got shapes {x.shape} and {y.shape}"
            )
        if len(x) != len(y):
            raise ValueError(
                f"x and y must have the same length, got len(x)={len(x)} and len(y)={len(y)}"
            )
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if seed is not None:
            seed = check_int(seed, "seed", minimum=0)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = check_bool(shuffle, "shuffle")
        self.drop_last = check_bool(drop_last, "drop_last")
        seed_sequence = np.random.SeedSequence(None if seed is None else int(seed))
        self._seed = seed_sequence.generate_state(_SEED_WORDS, dtype=np.uint32)
        self._epoch = 0  # epochs started
        self._batch = 0  # batches yielded in the current epoch (number self._epoch - 1)
        self._resume = False  # next iter() continues the current epoch (after a load)

    @property
    def num_samples(self) -> int:
        """Number of samples ``N``."""
        return len(self.x)

    @property
    def epoch(self) -> int:
        """Number of epochs started so far (the next ``iter()`` starts epoch ``epoch``)."""
        return self._epoch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def permutation(self, epoch: int) -> np.ndarray | None:
        """Sample order of ``epoch`` (int64, shape (N,)), or ``None`` without shuffling."""
        if not self.shuffle:
            return None
        sequence = np.random.SeedSequence(self._seed.tolist(), spawn_key=(int(epoch),))
        return np.random.default_rng(sequence).permutation(self.num_samples)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._resume:
            epoch, start = self._epoch - 1, self._batch
            self._resume = False
        else:
            epoch, start = self._epoch, 0
            self._epoch += 1
            self._batch = 0
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.permutation(epoch)
        for index in range(start, len(self)):
            low = index * self.batch_size
            high = min(low + self.batch_size, self.num_samples)
            if order is None:
                xb, yb = self.x[low:high], self.y[low:high]
            else:
                rows = order[low:high]
                xb, yb = self.x[rows], self.y[rows]
            if epoch == self._epoch - 1:  # a stale iterator does not move the position
                self._batch = index + 1
            yield xb, yb

    def state_dict(self) -> dict:
        """Position and seed, as a flat dict storable with ``np.savez``.

        Returns
        -------
        dict
            ``"seed"`` (uint32 array of shape (4,)), ``"epoch"`` and ``"batch"``
            (ints: epochs started, batches of the current one yielded), and the
            configuration checked on load: ``"num_samples"``, ``"batch_size"``,
            ``"shuffle"``, ``"drop_last"``.
        """
        return {
            "seed": self._seed.copy(),
            "epoch": self._epoch,
            "batch": self._batch,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a position saved by :meth:`state_dict` (possibly via ``np.load``).

        Raises
        ------
        ValueError
            On missing or unexpected keys, a configuration (number of samples,
            batch size, shuffle, drop_last) different from this loader's, or an
            invalid seed or position; the message names the key.
        """
        expected = set(self.state_dict())
        keys = set(state.keys())
        if keys != expected:
            raise ValueError(
                f"DataLoader.load_state_dict: missing keys {sorted(expected - keys)}, "
                f"unexpected keys {sorted(keys - expected)}"
            )
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            saved, mine = np.asarray(state[key]).item(), getattr(self, key)
            if saved != mine:
                raise ValueError(
                    f"DataLoader.load_state_dict: state_dict[{key!r}] is {saved!r}, but this "
                    f"loader has {key}={mine!r}"
                )
        seed = np.asarray(state["seed"])
        if seed.shape != (_SEED_WORDS,) or not np.issubdtype(seed.dtype, np.integer) or (
            seed.min() < 0 or seed.max() > np.iinfo(np.uint32).max
        ):
            raise ValueError(
                f"DataLoader.load_state_dict: state_dict['seed'] must be {_SEED_WORDS} uint32 "
                f"words, got dtype {seed.dtype} and shape {seed.shape}"
            )
        epoch, batch = np.asarray(state["epoch"]).item(), np.asarray(state["batch"]).item()
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                f"DataLoader.load_state_dict: state_dict['epoch'] must be an int >= 0, "
                f"got {epoch!r}"
            )
        limit = len(self) if epoch > 0 else 0
        if not isinstance(batch, int) or not 0 <= batch <= limit:
            raise ValueError(
                f"DataLoader.load_state_dict: state_dict['batch'] must be an int in "
                f"[0, {limit}] for epoch {epoch}, got {batch!r}"
            )
        self._seed = seed.astype(np.uint32)
        self._epoch, self._batch = epoch, batch
        self._resume = epoch > 0 and batch < len(self)

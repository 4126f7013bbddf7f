"""``Parameter``, ``Module`` and ``Sequential``: layer-by-layer forward/backward.

There is no autograd tape. As in Caffe, every layer implements ``forward(x)``
and ``backward(dy) -> dx`` itself; ``Sequential`` calls them in order and in
reverse order. Between the two a layer keeps a small, named cache of exactly
what its backward needs (its input, a mask, the arg-max of a pooling, ...):

- in ``train()`` mode, each ``forward`` pushes its cache on the layer's stack
  and each ``backward`` pops the newest one, so a layer applied twice in one
  forward pass (one ``ReLU`` used twice in a residual block) gets one backward
  per use, taken in reverse order, each with its own cache;
- a ``backward`` with no matching ``forward`` raises ``RuntimeError``;
- in ``eval()`` mode no layer keeps anything: inference holds no activations,
  and ``backward`` raises ``RuntimeError``;
- ``train()``, ``eval()``, :meth:`Module.zero_grad` and
  :meth:`Module.clear_caches` empty the stacks (a forward whose backward never
  came would otherwise be held forever);
- a cache holds references, not copies: ``Conv2d``, ``ConvTranspose2d``,
  ``Linear`` and ``BatchNorm2d`` keep their input, ``Sigmoid`` and ``Tanh``
  their output (and ``BatchNorm2d`` its output when a block fused the ReLU). Calling
  a module (``model(x)``, not ``model.forward(x)``) in training mode therefore
  works on a copy of ``x`` and returns a copy of an output that a cache holds,
  so the caller may change ``x`` or the output in place before the backward
  (one copy of the batch per step). Inside a ``forward``, arrays belong to the
  model: a composite module must not change in place an array that it passed
  to, or received from, a layer whose backward is still to come.

Parameter gradients accumulate (``+=``) until :meth:`Module.zero_grad`.
State dicts use PyTorch's keys and array layouts, so a ``torch.nn`` model's
``state_dict`` saved with ``np.savez`` loads into the matching cnnblas model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from cnnblas.checks import check_float_array, check_shape
from cnnblas.nn._state import key_list, loadable_value


class Parameter:
    """A trainable array and its accumulated gradient (Caffe's data/diff pair).

    Parameters
    ----------
    data : ndarray, float32 or float64
        Held without a copy.

    Attributes
    ----------
    data : ndarray
        The value. Optimizers and :meth:`Module.load_state_dict` update it in
        place, so other references to it stay valid.
    grad : ndarray, shape and dtype of ``data``
        Sum of every gradient passed to :meth:`accumulate_grad` since the last
        :meth:`zero_grad`; starts at zero.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        check_float_array(data, "Parameter data")
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def accumulate_grad(self, grad: np.ndarray) -> None:
        """Add ``grad`` (same shape as ``data``) to :attr:`grad`."""
        check_shape(grad, self.data.shape, "gradient")
        self.grad += grad

    def zero_grad(self) -> None:
        """Reset :attr:`grad` to zero in place."""
        self.grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class IncompatibleKeys(NamedTuple):
    """Keys reported by a non-strict :meth:`Module.load_state_dict`."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and container.

    Subclasses call ``super().__init__()`` first, assign :class:`Parameter` and
    ``Module`` attributes (registered in assignment order, which fixes the order
    of :meth:`parameters` and of the state dict), register non-trainable state
    with :meth:`register_buffer`, and implement :meth:`forward` and
    :meth:`backward`. A layer stores its cache with :meth:`_save_for_backward`
    and takes it back with :meth:`_saved_for_backward`.

    A composite module (a residual block, a whole network) holds its layers as
    attributes and caches nothing itself: its ``forward`` calls theirs, and its
    ``backward`` calls their backwards in the reverse order, summing the
    gradients where its input forked (see :mod:`cnnblas.nn`).
    """

    #: Whether ``forward`` may keep a reference to an argument or to its output
    #: for the backward (:meth:`__call__` then copies them). A layer that keeps
    #: only arrays of its own (a mask, a shape) sets it False; a composite
    #: module keeps the default.
    _keeps_references = True

    def __init__(self):
        self.training = True
        self._caches: list[dict] = []

    # -- registration ---------------------------------------------------------

    def _registry(self, kind: str) -> dict[str, None]:
        # dicts keyed by attribute name, in first-assignment order. Created on
        # demand so that a subclass may assign before calling super().__init__.
        return self.__dict__.setdefault(kind, {})

    def __setattr__(self, name: str, value) -> None:
        params, modules = self._registry("_parameter_names"), self._registry("_module_names")
        buffers = self._registry("_buffer_names")
        if isinstance(value, Parameter):
            params[name] = None
            modules.pop(name, None)
        elif isinstance(value, Module):
            modules[name] = None
            params.pop(name, None)
        elif name in buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"buffer {name!r} must be a numpy.ndarray or None, got {value!r}")
        else:
            # e.g. ``self.bias = None``: the attribute is no longer a parameter.
            params.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Register non-trainable state (saved in the state dict, never trained).

        Parameters
        ----------
        name : str
            Attribute name, e.g. ``"running_mean"``.
        value : ndarray or None
            None registers the key but leaves it out of the state dict.
        """
        if value is not None and not isinstance(value, np.ndarray):
            raise TypeError(f"buffer {name!r} must be a numpy.ndarray or None, got {value!r}")
        self._registry("_buffer_names")[name] = None
        object.__setattr__(self, name, value)

    # -- traversal --------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules as ``(name, module)``, in registration order."""
        for name in self._registry("_module_names"):
            yield name, getattr(self, name)

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``) and all descendants, depth first."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``("0.weight", Parameter)`` pairs: own parameters, then each child's.

        The order is deterministic (registration order, depth first) and each
        parameter appears once even if shared between layers.
        """
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name in module._registry("_parameter_names"):
                param = getattr(module, name)
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> list[Parameter]:
        """All trainable parameters, in the order of :meth:`named_parameters`."""
        return [param for _, param in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Buffers (running statistics, counters) with their dotted names."""
        for module_name, module in self.named_modules(prefix):
            for name in module._registry("_buffer_names"):
                value = getattr(module, name)
                if value is not None:
                    yield (f"{module_name}.{name}" if module_name else name), value

    # -- state ------------------------------------------------------------------

    def _state_arrays(self) -> OrderedDict[str, np.ndarray]:
        """Live arrays behind the state dict, in PyTorch's order: per module its
        parameters, then its buffers, then its children."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        self._collect_state(state, "")
        return state

    def _collect_state(self, state: OrderedDict, prefix: str) -> None:
        for name in self._registry("_parameter_names"):
            state[prefix + name] = getattr(self, name).data
        for name in self._registry("_buffer_names"):
            value = getattr(self, name)
            if value is not None:
                state[prefix + name] = value
        for name, child in self.named_children():
            child._collect_state(state, f"{prefix}{name}.")

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed like PyTorch's state dict.

        Returns
        -------
        OrderedDict of str to ndarray
            E.g. ``"0.weight"``, ``"0.bias"``, ``"1.running_mean"``,
            ``"1.num_batches_tracked"`` (int64, shape ``()``). The arrays are
            copies: later training does not change a saved state.
        """
        return OrderedDict((key, value.copy()) for key, value in self._state_arrays().items())

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True):
        """Copy arrays from ``state`` into the parameters and buffers, in place.

        Everything is checked before anything is written, so a failed load
        leaves the module unchanged.

        Parameters
        ----------
        state : mapping of str to array_like
            E.g. a :meth:`state_dict`, or an ``np.load`` of an ``.npz`` file.
        strict : bool, default True
            Whether missing or unexpected keys are an error.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, both empty when strict.

        Raises
        ------
        ValueError
            A missing or unexpected key (strict), an array whose shape differs
            from the module's, a non-floating array for a floating parameter
            or buffer (or a non-integer one for an integer buffer), or a value
            too large for the module's dtype; the message names the key.

        Notes
        -----
        As PyTorch's ``copy_``, floating arrays are cast to the dtype of the
        parameter or buffer they load into (a float64 state dict loads into a
        float32 model, rounded to float32), and integer arrays into integer
        buffers; the module's arrays keep their dtype, layout and identity.
        """
        targets = self._state_arrays()
        missing = [key for key in targets if key not in state]
        unexpected = [key for key in state if key not in targets]
        if strict and (missing or unexpected):
            first = (f"first missing key {missing[0]!r}" if missing
                     else f"first unexpected key {unexpected[0]!r}")
            raise ValueError(
                f"load_state_dict of {type(self).__name__}: the state dict does not fit "
                f"this model ({first}); missing keys {key_list(missing)}, unexpected keys "
                f"{key_list(unexpected)}. Was it saved from a model of another "
                "depth or layout? Nothing was loaded."
            )
        values = {key: loadable_value(key, state[key], target)
                  for key, target in targets.items() if key in state}
        for key, value in values.items():
            np.copyto(targets[key], value)
        return IncompatibleKeys(missing, unexpected)

    # -- modes and gradients ------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant.

        Either way every cached activation is dropped: a forward made in the
        other mode is never back-propagated.
        """
        for module in self.modules():
            module.training = bool(mode)
        self.clear_caches()
        return self

    def eval(self) -> Module:
        """Inference mode: batch statistics frozen, dropout off, nothing cached."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero.

        The caches of pending backwards are kept, so PyTorch's order (forward,
        loss, ``zero_grad``, backward) works; :meth:`clear_caches`, :meth:`train`
        and :meth:`eval` drop them."""
        for param in self.parameters():
            param.zero_grad()

    def clear_caches(self) -> None:
        """Drop what every layer holds for pending backwards, here and below."""
        for module in self.modules():
            module._caches.clear()

    # -- forward / backward -------------------------------------------------------

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args, **kwargs):
        """Run :meth:`forward`; the outermost call in training mode owns its arrays.

        Layers keep references to their inputs and outputs for the backward
        (:mod:`cnnblas.nn.module`). So that the caller's later in-place edits
        (``x *= 0``, ``y -= target``) cannot change what a pending backward
        reads, the outermost call of a training-mode module copies its array
        arguments first, and returns a copy of its output when a cache this
        call made shares its memory (e.g. a final :class:`~cnnblas.nn.Sigmoid`,
        which keeps its output). Calls nested inside another module's call
        run ``forward`` directly: arrays inside one forward pass belong to the
        model (:mod:`cnnblas.nn`). ``forward`` itself copies nothing (but the
        layer calls inside a composite's ``forward`` called directly are then
        outermost calls).
        """
        if not self.training or _outermost.active or not self._keeps_references:
            return self.forward(*args, **kwargs)
        args = tuple(_owned(value) for value in args)
        kwargs = {name: _owned(value) for name, value in kwargs.items()}
        _outermost.active, _outermost.saved = True, []
        try:
            out = _unshared(self.forward(*args, **kwargs), _outermost.saved)
        finally:
            _outermost.active, _outermost.saved = False, None
        return out

    def _save_for_backward(self, **arrays) -> None:
        """Push ``arrays`` (by name) for a later backward, in training mode only."""
        if self.training:
            self._caches.append(arrays)
            if _outermost.active and self._keeps_references:
                _outermost.saved.append(arrays)  # compared with the call's output

    def _saved_for_backward(self) -> dict:
        """Pop the newest cache pushed by forward, or raise RuntimeError if there is
        none."""
        if not self._caches:
            mode = "train" if self.training else "eval"
            raise RuntimeError(
                f"{self._describe()}.backward() called with nothing cached ({mode} mode): "
                "no forward() in train() mode is waiting for this backward(). Each "
                "forward() supports a single backward() (the last forward first); "
                "eval() mode keeps no activations."
            )
        return self._caches.pop()

    @property
    def cached(self) -> tuple[str, ...]:
        """Names of the arrays held for the next backward (the newest forward's)."""
        return tuple(self._caches[-1]) if self._caches else ()

    @property
    def pending_backwards(self) -> int:
        """How many training-mode forwards of this layer still await their backward."""
        return len(self._caches)

    # -- printing -------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The constructor arguments shown by ``repr``; layers override it."""
        return ""

    def _describe(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return self._describe()
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)


class _Outermost(threading.local):
    """Whether this thread is inside the outermost training-mode
    :meth:`Module.__call__` (per thread: two threads may run two models), and
    the caches pushed since by layers that keep references."""

    active = False
    saved: list[dict] | None = None  # a new list per outermost call


_outermost = _Outermost()


def _owned(value):
    """A private copy of an array argument (anything else as it is)."""
    return value.copy() if isinstance(value, np.ndarray) else value


def _shares_memory(caches: list[dict], array: np.ndarray) -> bool:
    """Whether an array of ``caches`` may share memory with ``array`` (a bounds
    test, no data read)."""
    return any(isinstance(value, np.ndarray) and np.may_share_memory(value, array)
               for cache in caches for value in cache.values())


def _prefixed(error: Exception, where: str) -> Exception:
    """The same exception with ``where`` prepended (only for the plain built-in
    types, whose constructor takes a single message)."""
    if type(error) in (ValueError, TypeError, RuntimeError):
        return type(error)(f"{where}: {error}")
    return error


def _where(index: int, layer: Module, error: Exception) -> str:
    """``"Sequential[3]"``, plus the layer's description unless the message has it."""
    description = layer._describe()
    return f"Sequential[{index}]" + ("" if description in str(error) else f" {description}")


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    Children are named ``"0"``, ``"1"``, ... so state-dict keys are exactly
    those of ``torch.nn.Sequential`` built from the same layers (layers
    without parameters or buffers take an index but contribute no keys).

    Parameters
    ----------
    *layers : Module

    Notes
    -----
    ``ValueError``, ``TypeError`` and ``RuntimeError`` raised by a layer are
    re-raised with the layer's index in front (and its description, when the
    message does not already have it), e.g. ``"Sequential[7]:
    Linear(in_features=400, out_features=120) expects 400 input features, got
    256 ..."``.
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential layer {index} must be a cnnblas.nn.Module, "
                    f"got {type(layer).__name__}"
                )
            setattr(self, str(index), layer)

    def __len__(self) -> int:
        return len(self._registry("_module_names"))

    def __iter__(self) -> Iterator[Module]:
        return self.children()

    def __getitem__(self, index: int | slice) -> Module:
        """The layer at ``index``, or a new Sequential of the same layer objects for a
        slice (re-indexed from 0, as in PyTorch)."""
        layers = list(self.children())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def append(self, layer: Module) -> Sequential:
        """Add ``layer`` at the end (index ``len(self)``)."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential can only append a Module, got {type(layer).__name__}")
        setattr(self, str(len(self)), layer)
        return self

    def forward(self, x):
        """Apply every layer in order.

        Parameters
        ----------
        x : ndarray
            Input of the first layer.

        Returns
        -------
        ndarray
            Output of the last layer.
        """
        for index, layer in enumerate(self):
            try:
                x = layer.forward(x)
            except (ValueError, TypeError) as error:
                raise _prefixed(error, _where(index, layer, error)) from error
        return x

    def backward(self, dy):
        """Back-propagate ``dy`` through the layers in reverse order.

        Parameters
        ----------
        dy : ndarray
            Gradient of the loss with respect to the output of :meth:`forward`.

        Returns
        -------
        ndarray
            Gradient with respect to the input of :meth:`forward`.
        """
        layers = list(self)
        for index in range(len(layers) - 1, -1, -1):
            try:
                dy = layers[index].backward(dy)
            except (ValueError, TypeError, RuntimeError) as error:
                raise _prefixed(error, _where(index, layers[index], error)) from error
        return dy


def _unshared(out, saved: list[dict]):
    """``out`` with every array that shares memory with a cache in ``saved``
    copied, inside tuples, lists and dicts too (a model may return several)."""
    if isinstance(out, np.ndarray):
        return out.copy() if _shares_memory(saved, out) else out
    if isinstance(out, (tuple, list)):
        items = [_unshared(item, saved) for item in out]
        if hasattr(out, "_fields"):  # a named tuple
            return type(out)(*items)
        return type(out)(items)
    if isinstance(out, dict):
        return {key: _unshared(value, saved) for key, value in out.items()}
    return out


__all__ = ["Parameter", "Module", "Sequential", "IncompatibleKeys"]


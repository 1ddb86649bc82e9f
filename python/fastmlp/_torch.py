"""PyTorch importers: a live ``nn.Sequential``, or a saved ``state_dict`` read without torch.

:func:`from_torch` needs torch (it reads the module the caller already has, so torch is
imported only then); :func:`from_torch_checkpoint` reads the file with NumPy alone
(:mod:`fastmlp._formats.torch_checkpoint`), so it works where torch is not installed.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ._common import PathLike, resolve_activations
from ._model import MLP
from ._formats.torch_checkpoint import read_torch_state_dict, state_dict_to_weights

__all__ = ["from_torch", "from_torch_checkpoint"]

_SUPPORTED = (
    "Linear, Sigmoid, ReLU, Tanh and Identity, optionally a leading Flatten and a trailing "
    "Softmax(dim=-1)"
)


def _is_torch_module(obj: Any) -> bool:
    # Duck-typed on the class's home, so that a non-torch argument never imports torch.
    return any(
        (klass.__module__ or "").split(".")[0] == "torch" and klass.__name__ == "Module"
        for klass in type(obj).__mro__
    )


def _plain(module: Any, base: Any) -> bool:
    """True if ``module`` is a ``base`` whose forward is ``base``'s own (not a subclass's)."""
    return isinstance(module, base) and type(module).forward is base.forward


def _flatten_modules(module: Any, nn: Any, path: str) -> "List[Tuple[str, Any]]":
    """The modules of (nested) Sequentials in call order, each with its state_dict prefix."""
    if _plain(module, nn.Sequential):
        modules: "List[Tuple[str, Any]]" = []
        for name, child in module.named_children():
            modules += _flatten_modules(child, nn, f"{path}.{name}" if path else name)
        return modules
    return [(path, module)]


def _linear_arrays(linear: Any, where: str) -> "Tuple[np.ndarray, np.ndarray]":
    weight = linear.weight.detach()
    if str(weight.dtype) not in ("torch.float16", "torch.float32", "torch.float64"):
        raise TypeError(
            f"{where} has weights of {weight.dtype}; expected float16, float32 or float64 "
            "(NumPy has no bfloat16: call model.float() first)"
        )
    W = weight.cpu().numpy().T
    if linear.bias is None:
        b = np.zeros(W.shape[1], dtype=W.dtype)
    else:
        b = linear.bias.detach().cpu().numpy()
    return W, b  # MLP copies both, so sharing torch's memory here is harmless


def from_torch(module: Any, *, input_scale: Optional[float] = None, dtype: Any = None) -> MLP:
    """Convert a PyTorch ``nn.Sequential`` MLP into an :class:`MLP`.

    Parameters
    ----------
    module : torch.nn.Sequential
        Made of ``Linear`` layers, each optionally followed by ``Sigmoid``, ``ReLU`` or
        ``Tanh``; ``Identity`` modules and nested ``Sequential`` are allowed, as are a leading
        ``Flatten()`` (fastmlp flattens ``(N, ...)`` inputs itself) and a trailing
        ``Softmax(dim=-1)`` (or ``dim=1``). A ``Linear`` with no activation after it gets
        ``"identity"``. A lone ``nn.Linear`` is accepted too. The module is only read.
    input_scale : float, optional
        A factor applied to the inputs inside the kernel, e.g. ``1/255`` for raw pixels.
    dtype : {float32, float64}, optional
        The compute dtype; default: float32 for float32 weights, else float64.

    Returns
    -------
    MLP
        A model whose ``predict_proba`` equals ``module(X)`` (to rounding).

    Raises
    ------
    TypeError
        If ``module`` is not a torch module, or a Linear's weights are not float16/32/64.
    ValueError
        If a module is not supported (the message names its class and index in the
        Sequential), an activation does not follow a Linear, or there is no Linear at all.

    Examples
    --------
    >>> from torch import nn  # doctest: +SKIP
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=-1))  # doctest: +SKIP
    >>> fastmlp.from_torch(model).activations  # doctest: +SKIP
    ('softmax',)
    """
    if not _is_torch_module(module):
        raise TypeError(
            f"from_torch expects a torch.nn.Sequential, got {type(module).__name__}; for a "
            "saved state_dict use fastmlp.from_torch_checkpoint(path, ...)"
        )
    import torch.nn as nn  # type: ignore[import-not-found]

    if not (_plain(module, nn.Sequential) or _plain(module, nn.Linear)):
        raise TypeError(
            f"from_torch expects an nn.Sequential of {_SUPPORTED}; got a "
            f"{type(module).__name__} (a custom forward cannot be read: rebuild the network "
            "as an nn.Sequential holding the same layers)"
        )
    names = {nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Tanh: "tanh", nn.Softmax: "softmax"}
    modules = _flatten_modules(module, nn, "")
    layers: "List[List[Any]]" = []  # [W (in, out), b, activation]
    activation_set = False  # whether the last layer already has its activation
    for position, (index, child) in enumerate(modules):
        kind = type(child).__name__
        where = f"module {kind} at index {index or 0}"
        if _plain(child, nn.Linear):
            W, b = _linear_arrays(child, where)
            layers.append([W, b, "identity"])
            activation_set = False
        elif type(child) in names:
            name = names[type(child)]
            if name == "softmax":
                if position != len(modules) - 1:
                    raise ValueError(
                        f"{where}: Softmax is supported only as the last module ({_SUPPORTED})"
                    )
                if child.dim not in (-1, 1):
                    raise ValueError(
                        f"{where}: Softmax(dim={child.dim}) is not supported; expected "
                        "Softmax(dim=-1) or Softmax(dim=1), over the features of each row"
                    )
            if not layers:
                raise ValueError(f"{where}: an activation before any Linear is not supported")
            if activation_set:
                raise ValueError(
                    f"{where}: follows another activation; fastmlp applies one activation "
                    "per Linear layer"
                )
            layers[-1][2] = name
            activation_set = True
        elif type(child) is nn.Identity:
            continue
        elif type(child) is nn.Flatten:
            if layers:
                raise ValueError(f"{where}: Flatten is supported only before the first Linear")
            if child.start_dim != 1 or child.end_dim != -1:
                raise ValueError(
                    f"{where}: Flatten(start_dim={child.start_dim}, end_dim={child.end_dim}) "
                    "is not supported; expected Flatten() (start_dim=1, end_dim=-1)"
                )
        else:
            raise ValueError(f"unsupported {where}; fastmlp.from_torch supports {_SUPPORTED}")
    if not layers:
        raise ValueError(f"the Sequential has no Linear layer; expected {_SUPPORTED}")
    return MLP([tuple(layer) for layer in layers], input_scale=input_scale, dtype=dtype)


def from_torch_checkpoint(
    path: PathLike,
    *,
    activations: Optional[Sequence[str]] = None,
    hidden: Optional[str] = None,
    output: Optional[str] = None,
    input_scale: Optional[float] = None,
    dtype: Any = None,
) -> MLP:
    """Load ``torch.save(model.state_dict(), path)`` of Linear layers, without torch.

    The pickle inside is read by a restricted unpickler that never runs code from it. A
    state_dict holds weights only, so the activations must be named.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint (torch's zip format, the default since torch 1.6).
    activations : sequence of str, optional
        One activation per Linear layer, in order (``"sigmoid"``, ``"relu"``, ``"tanh"``,
        ``"identity"``, ``"softmax"``).
    hidden, output : str, optional
        Instead of ``activations``: the activation of every hidden layer, and of the last.
    input_scale : float, optional
        A factor applied to the inputs inside the kernel.
    dtype : {float32, float64}, optional
        The compute dtype; default: float32 for float32 weights, else float64.

    Returns
    -------
    MLP
        ``W_i`` is the i-th Linear's ``weight.T``, ``b_i`` its bias (zeros if it had none).

    Raises
    ------
    ValueError
        If neither ``activations`` nor ``output`` (and ``hidden`` for several layers) is
        given, both forms are, or ``activations`` has the wrong length.
    FileNotFoundError
        If ``path`` does not exist.
    UnsafePickleError
        If ``data.pkl`` names a global other than ``collections.OrderedDict``, the
        ``torch.<Type>Storage`` names and ``torch._utils._rebuild_tensor_v2`` /
        ``_rebuild_parameter`` (for example ``os.system``: it is never imported nor called),
        or holds something other than a dict of tensors.
    WeightsFormatError
        If the file is not a torch zip checkpoint, a storage member is missing or of the wrong
        size, a tensor reaches outside its storage, the archive declares more than 2 GiB, a
        tensor is bfloat16, complex or quantized, or the state_dict holds anything but Linear
        weights and biases.

    Examples
    --------
    >>> net = fastmlp.from_torch_checkpoint(  # doctest: +SKIP
    ...     "mlp.pt", hidden="relu", output="softmax"
    ... )
    """
    weights = state_dict_to_weights(read_torch_state_dict(path))
    n_layers = len(weights) // 2
    names = resolve_activations(
        n_layers, activations, hidden, output, required=True, wording="checkpoint"
    )
    layers = [(weights[f"W{i}"], weights[f"b{i}"], names[i - 1]) for i in range(1, n_layers + 1)]
    return MLP(layers, input_scale=input_scale, dtype=dtype)

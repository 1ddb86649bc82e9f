"""``fastmlp.onnx.InferenceSession``: ONNX Runtime's session interface, run by fastmlp.

Code written for ONNX Runtime::

    session = onnxruntime.InferenceSession("mlp.onnx", providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {session.get_inputs()[0].name: X})

runs unchanged with ``fastmlp.onnx.InferenceSession`` for the MLP graphs exporters write:
skl2onnx's ``MLPClassifier`` (with ``ZipMap`` or ``zipmap=False``) and ``MLPRegressor``,
``torch.onnx.export`` of an ``nn.Sequential`` of ``Linear``, ``ReLU``, ``Sigmoid``, ``Tanh``,
``Softmax``, ``LogSoftmax`` and ``Flatten``, and fastmlp's own ``MLP.to_onnx``.

How: the chain of dense layers from the graph input (``Cast``, ``Flatten``/``Reshape`` and a
scalar ``Mul`` before the first layer; ``Gemm``, or ``MatMul`` + ``Add``; ``Sigmoid``, ``Relu``,
``Tanh``, ``Softmax``, a final ``LogSoftmax``) becomes one :class:`fastmlp.MLP`. What follows it
is evaluated with NumPy: ``Identity``, ``Cast``, ``Reshape``, ``Flatten``, ``ArgMax``,
``Concat``, ``Add``, ``Sub``, ``Mul``, ``Div`` and ONNX-ML's ``ArrayFeatureExtractor`` and
``ZipMap`` (skl2onnx's label and probability outputs). A graph with any other operator is
refused with its name and node: ONNX Runtime runs those.

Needs the ``onnx`` package to parse files (``pip install "fastmlp[onnx]"``); a file is read as
data only (tensors stored outside it are refused, never opened).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from fastmlp._model import MLP
from fastmlp._formats.onnx import (
    _ACTIVATION_OPS,
    _DEFAULT_DOMAINS,
    _check_input_shape,
    _collect_layers,
    _exact_input_scale,
    _GraphReader,
    _import_onnx,
    _node_label,
    _parse_model,
)
from fastmlp.errors import WeightsFormatError

__all__ = ["InferenceSession", "NodeArg"]

_ML_DOMAIN = "ai.onnx.ml"

# ONNX TensorProto element types: name as ONNX Runtime prints it, and NumPy dtype.
_ELEMENT_TYPES: Dict[int, Tuple[str, Any]] = {
    1: ("float", np.float32),
    2: ("uint8", np.uint8),
    3: ("int8", np.int8),
    4: ("uint16", np.uint16),
    5: ("int16", np.int16),
    6: ("int32", np.int32),
    7: ("int64", np.int64),
    8: ("string", object),
    9: ("bool", np.bool_),
    10: ("float16", np.float16),
    11: ("double", np.float64),
    12: ("uint32", np.uint32),
    13: ("uint64", np.uint64),
}

# Ops the dense chain is made of (the layers themselves are read by fastmlp._formats.onnx).
_BEFORE_FIRST_LAYER = ("Cast", "Flatten", "Reshape", "Mul")
_LAYER_OPS = ("Gemm", "MatMul", "Add", "Identity", *_ACTIVATION_OPS)
_POST_OPS = (
    "Identity",
    "Cast",
    "Reshape",
    "Flatten",
    "ArgMax",
    "Concat",
    "Add",
    "Sub",
    "Mul",
    "Div",
)
_ML_POST_OPS = ("ArrayFeatureExtractor", "ZipMap")
_SESSION_OPS = {"Constant", "LogSoftmax", *_BEFORE_FIRST_LAYER, *_LAYER_OPS, *_POST_OPS}

PathOrBytes = Union[str, bytes, "os.PathLike[str]"]


class NodeArg:
    """A graph input or output as ONNX Runtime describes it: ``name``, ``shape``, ``type``.

    ``shape`` lists each dimension as an int, a str (a symbolic dimension) or None (unknown);
    ``type`` is ONNX Runtime's string, e.g. ``"tensor(float)"`` or
    ``"seq(map(int64,tensor(float)))"``.
    """

    __slots__ = ("name", "shape", "type")

    def __init__(self, name: str, shape: "List[Any]", type: str) -> None:
        self.name = name
        self.shape = shape
        self.type = type

    def __repr__(self) -> str:
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


def _type_string(type_proto: Any) -> str:
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        element = type_proto.tensor_type.elem_type
        return f"tensor({_ELEMENT_TYPES.get(element, (str(element), None))[0]})"
    if kind == "sequence_type":
        return f"seq({_type_string(type_proto.sequence_type.elem_type)})"
    if kind == "map_type":
        key = _ELEMENT_TYPES.get(type_proto.map_type.key_type, ("?", None))[0]
        return f"map({key},{_type_string(type_proto.map_type.value_type)})"
    return str(kind)


def _shape_list(type_proto: Any) -> "List[Any]":
    if type_proto.WhichOneof("value") != "tensor_type":
        return []
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        return []
    dims: List[Any] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def _node_arg(value_info: Any) -> NodeArg:
    return NodeArg(value_info.name, _shape_list(value_info.type), _type_string(value_info.type))


class _SessionGraphReader(_GraphReader):
    """fastmlp._formats.onnx's reader, also indexing ONNX-ML nodes (skl2onnx's label outputs)."""

    def _check_domain(self, node: Any) -> None:
        """Accepts ONNX-ML nodes too: the session runs the ones it knows and refuses the rest,
        naming them, when it meets them."""

    def value(self, name: str, node: Any) -> np.ndarray:
        """A constant's value; string tensors as object arrays of str (as onnxruntime)."""
        value = self.constant(name, node)
        if value.dtype.kind in "SO":
            value = np.array(
                [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.ravel()],
                dtype=object,
            ).reshape(value.shape)
        return value


def _unsupported(reader: _GraphReader, node: Any) -> WeightsFormatError:
    domain = f"{node.domain}." if node.domain not in _DEFAULT_DOMAINS else ""
    return reader.fail(
        f"unsupported operator {domain}{node.op_type} ({_node_label(node)}); "
        "fastmlp.onnx.InferenceSession runs dense MLP graphs (Gemm, MatMul, Add, Sigmoid, "
        "Relu, Tanh, Softmax, LogSoftmax, and skl2onnx's label and ZipMap outputs): use "
        "onnxruntime.InferenceSession, which runs every ONNX operator"
    )


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    target = [int(d) for d in shape.ravel()]
    if not allowzero:
        target = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(target)]
    return data.reshape(target)


def _compile_post_node(
    reader: _SessionGraphReader, node: Any
) -> "Callable[[List[Any]], List[Any]]":
    """A function of the node's input values returning its output values."""
    op = node.op_type
    attributes = reader.attributes(node)
    if node.domain == _ML_DOMAIN and op == "ZipMap":
        if "classlabels_int64s" in attributes:
            labels: List[Any] = [int(v) for v in attributes["classlabels_int64s"]]
        else:
            labels = [
                v.decode("utf-8") if isinstance(v, bytes) else str(v)
                for v in attributes.get("classlabels_strings", [])
            ]

        def zipmap(values: "List[Any]") -> "List[Any]":
            rows = np.asarray(values[0])
            if rows.ndim != 2 or rows.shape[1] != len(labels):
                raise ValueError(
                    f"{_node_label(node)} receives shape {rows.shape}; expected (N, {len(labels)})"
                )
            return [[dict(zip(labels, row)) for row in rows.tolist()]]

        return zipmap
    if node.domain == _ML_DOMAIN and op == "ArrayFeatureExtractor":

        def extract(values: "List[Any]") -> "List[Any]":
            data, indices = np.asarray(values[0]), np.asarray(values[1])
            taken = np.take(data, indices.ravel().astype(np.intp), axis=-1)
            return [taken.reshape(1, -1) if data.ndim == 1 else taken]

        return extract
    if op == "Identity":
        return lambda values: [values[0]]
    if op == "Cast":
        target = int(attributes.get("to", 0))
        if target not in _ELEMENT_TYPES or target == 8:
            raise reader.fail(
                f"{_node_label(node)} casts to ONNX type {target}; fastmlp casts to numbers only"
            )
        dtype = _ELEMENT_TYPES[target][1]
        return lambda values: [np.asarray(values[0]).astype(dtype)]
    if op == "Reshape":
        allowzero = int(attributes.get("allowzero", 0))
        return lambda values: [_reshape(np.asarray(values[0]), np.asarray(values[1]), allowzero)]
    if op == "Flatten":
        axis = int(attributes.get("axis", 1))

        def flatten(values: "List[Any]") -> "List[Any]":
            data = np.asarray(values[0])
            at = axis if axis >= 0 else axis + data.ndim
            return [data.reshape(int(np.prod(data.shape[:at])), -1)]

        return flatten
    if op == "ArgMax":
        axis = int(attributes.get("axis", 0))
        keepdims = int(attributes.get("keepdims", 1))
        last = int(attributes.get("select_last_index", 0))

        def argmax(values: "List[Any]") -> "List[Any]":
            data = np.asarray(values[0])
            if last:
                flipped = np.flip(data, axis=axis)
                index = data.shape[axis] - 1 - np.argmax(flipped, axis=axis)
            else:
                index = np.argmax(data, axis=axis)
            index = index.astype(np.int64)
            return [np.expand_dims(index, axis) if keepdims else index]

        return argmax
    if op == "Concat":
        axis = int(attributes.get("axis", 0))
        return lambda values: [np.concatenate([np.asarray(v) for v in values], axis=axis)]
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]

    def elementwise(values: "List[Any]") -> "List[Any]":
        a, b = np.asarray(values[0]), np.asarray(values[1])
        result = binary(a, b)
        if a.dtype == b.dtype and result.dtype != a.dtype:  # integer Div stays integer
            result = (a // b) if op == "Div" else result.astype(a.dtype)
        return [result]

    return elementwise


class InferenceSession:
    """Runs an ONNX MLP through fastmlp with ONNX Runtime's ``InferenceSession`` interface.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike or bytes
        The ``.onnx`` file, or its contents.
    sess_options, providers, provider_options, **kwargs
        Accepted for compatibility with ONNX Runtime and ignored: fastmlp runs on the CPU with
        its own threads (``fastmlp.set_num_threads``, ``threadpoolctl``).

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed.
    fastmlp.WeightsFormatError
        (a ``ValueError``) if the file is not an ONNX model, or its graph uses an operator this
        session does not run (the message names the operator and its node; ONNX Runtime runs
        them), or is not one chain of dense layers from one input.

    Examples
    --------
    >>> session = fastmlp.onnx.InferenceSession("mlp.onnx")  # doctest: +SKIP
    >>> label, proba = session.run(None, {"X": X.astype(np.float32)})  # doctest: +SKIP
    """

    def __init__(
        self,
        path_or_bytes: PathOrBytes,
        sess_options: Any = None,
        providers: Optional[Sequence[Any]] = None,
        provider_options: Optional[Sequence[Any]] = None,
        **kwargs: Any,
    ) -> None:
        onnx = _import_onnx()
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            where, data = "<ONNX bytes>", bytes(path_or_bytes)
        elif isinstance(path_or_bytes, (str, os.PathLike)):
            where = repr(os.fspath(path_or_bytes))
            data = pathlib.Path(path_or_bytes).read_bytes()
        else:
            raise TypeError(
                f"path_or_bytes must be a path or the file's bytes, got "
                f"{type(path_or_bytes).__name__}"
            )
        self._providers = ["CPUExecutionProvider"]
        self._build(onnx, _parse_model(onnx, data, where), where)

    # -- building -------------------------------------------------------------------------

    def _build(self, onnx: Any, model: Any, where: str) -> None:
        reader = _SessionGraphReader(onnx, model, where)
        graph = model.graph
        for node in graph.node:
            if node.domain in _DEFAULT_DOMAINS:
                supported = node.op_type in _SESSION_OPS
            else:
                supported = node.domain == _ML_DOMAIN and node.op_type in _ML_POST_OPS
            if not supported:
                raise _unsupported(reader, node)
        inputs = [v for v in graph.input if v.name not in reader.constants]
        if len(inputs) != 1:
            raise reader.fail(
                f"expected one graph input (besides initializers), found {[v.name for v in inputs]}"
            )
        self._inputs = [_node_arg(inputs[0])]
        self._outputs = [_node_arg(v) for v in graph.output]
        self._input_name = inputs[0].name
        element = inputs[0].type.tensor_type.elem_type
        if inputs[0].type.WhichOneof("value") != "tensor_type" or element not in _ELEMENT_TYPES:
            raise reader.fail(f"input {self._input_name!r} is not a numeric tensor")
        self._input_dtype = np.dtype(_ELEMENT_TYPES[element][1])
        self._input_type = self._inputs[0].type
        self._input_shape = self._inputs[0].shape

        trunk, log_output = self._trunk(reader, graph)
        self._trunk_output = trunk[-1].output[0]
        # A leading Cast is what fastmlp does to its input anyway (each value converted to the
        # weights' dtype), so the layers start from its output.
        cast = trunk[0] if trunk[0].op_type == "Cast" else None
        layer_nodes = trunk[1:] if cast is not None else list(trunk)
        if log_output:
            layer_nodes = layer_nodes[:-1]
        layer_input = cast.output[0] if cast is not None else self._input_name
        layers, input_scale, flattened_to = _collect_layers(reader, layer_input, layer_nodes)
        if log_output:
            W, b, activation = layers[-1]
            if activation != "identity":
                raise reader.fail(
                    f"{_node_label(trunk[-1])} follows a {activation} activation; fastmlp reads "
                    "LogSoftmax only directly after the last dense layer"
                )
            layers[-1] = (W, b, "softmax")
        _check_input_shape(reader, self._input_name, layers[0][0].shape[0], flattened_to)
        self._model = MLP(layers, input_scale=_exact_input_scale(model, input_scale))
        self._log_output = log_output

        trunk_ids = {id(n) for n in trunk}
        self._post: List[Tuple[Callable[[List[Any]], List[Any]], List[str], List[str]]] = []
        self._constants: Dict[str, Any] = {}
        available = {self._input_name, self._trunk_output}
        for node in graph.node:
            if id(node) in trunk_ids or node.op_type == "Constant":
                continue
            for name in node.input:
                if not name or name in available:
                    continue
                if name in reader.constants or name in reader.constant_nodes:
                    self._constants[name] = reader.value(name, node)
                    continue
                raise reader.fail(
                    f"{_node_label(node)} reads {name!r}, a tensor inside the dense layers; "
                    "fastmlp runs the layers as one and keeps only their output"
                )
            if self._input_name in node.input:
                raise reader.fail(
                    f"{_node_label(node)} reads the graph input {self._input_name!r} besides the "
                    "dense layers; fastmlp runs graphs whose input feeds only the layers"
                )
            function = _compile_post_node(reader, node)
            self._post.append((function, list(node.input), list(node.output)))
            available.update(node.output)
        for output in self._outputs:
            if output.name not in available:
                raise reader.fail(f"graph output {output.name!r} is computed by no node")
        self._plans: Dict[Tuple[str, ...], List[int]] = {}

    def _trunk(self, reader: _SessionGraphReader, graph: Any) -> "Tuple[List[Any], bool]":
        """The nodes of the dense chain from the input, and if it ends in a LogSoftmax."""
        outputs = {v.name for v in graph.output}
        running, trunk, seen_layer, log_output = self._input_name, [], False, False
        while running not in outputs or not seen_layer:
            consumers = reader.consumers.get(running, [])
            if len(consumers) != 1 or consumers[0].domain not in _DEFAULT_DOMAINS:
                break
            node = consumers[0]
            op = node.op_type
            if op in ("Gemm", "MatMul"):
                seen_layer = True
            elif op in _BEFORE_FIRST_LAYER and (seen_layer or (op == "Cast" and trunk)):
                break
            elif op == "LogSoftmax":
                if not seen_layer:
                    break
                reader.check_softmax_axis(node)
                trunk.append(node)
                log_output = True
                break
            elif op not in _LAYER_OPS and op not in _BEFORE_FIRST_LAYER:
                break
            elif op in _ACTIVATION_OPS and not seen_layer:
                break
            if op == "Cast":
                to = reader.attributes(node).get("to")
                if to not in (1, 11):
                    break
            if len(node.output) != 1:
                break
            trunk.append(node)
            running = node.output[0]
        if not seen_layer:
            raise reader.fail(
                f"no dense layer (Gemm or MatMul) follows the input {self._input_name!r}; "
                "fastmlp.onnx.InferenceSession runs MLP graphs, onnxruntime runs any graph"
            )
        return trunk, log_output

    # -- ONNX Runtime's interface ---------------------------------------------------------

    def get_inputs(self) -> "List[NodeArg]":
        """The graph input: name, shape and type as onnxruntime reports them."""
        return list(self._inputs)

    def get_outputs(self) -> "List[NodeArg]":
        """The graph outputs, in order: name, shape and type as onnxruntime reports them."""
        return list(self._outputs)

    def get_providers(self) -> "List[str]":
        """``["CPUExecutionProvider"]``: fastmlp runs on the CPU."""
        return list(self._providers)

    def _plan(self, names: "Tuple[str, ...]") -> "List[int]":
        """Indices of the post-layer nodes the requested outputs need, in graph order."""
        plan = self._plans.get(names)
        if plan is None:
            needed = set(names)
            chosen = []
            for index in range(len(self._post) - 1, -1, -1):
                _, inputs, outputs = self._post[index]
                if needed.intersection(outputs):
                    chosen.append(index)
                    needed.update(inputs)
            plan = chosen[::-1]
            self._plans[names] = plan
        return plan

    def _check_input(self, input_feed: "Dict[str, Any]") -> np.ndarray:
        if not isinstance(input_feed, dict):
            raise TypeError(
                f"input_feed must be a dict of input name to array, got {type(input_feed).__name__}"
            )
        if self._input_name not in input_feed:
            raise ValueError(
                f"Required inputs ({[self._input_name]}) are missing from input feed "
                f"({list(input_feed)})."
            )
        unknown = [name for name in input_feed if name != self._input_name]
        if unknown:
            raise ValueError(
                f"input_feed names {unknown}; the graph's only input is {self._input_name!r}"
            )
        X = input_feed[self._input_name]
        if type(X) is not np.ndarray:
            X = np.asarray(X, dtype=self._input_dtype)
        if X.dtype != self._input_dtype:
            raise TypeError(
                f"input {self._input_name!r} has dtype {X.dtype}; the graph expects "
                f"{self._input_type} ({self._input_dtype}), as onnxruntime does"
            )
        shape = self._input_shape
        if shape and X.ndim != len(shape):
            raise ValueError(
                f"input {self._input_name!r} has shape {X.shape}; the graph expects rank "
                f"{len(shape)}, shape {shape}"
            )
        for got, expected in zip(X.shape, shape):
            if isinstance(expected, int) and got != expected:
                raise ValueError(
                    f"input {self._input_name!r} has shape {X.shape}; the graph expects {shape}"
                )
        return X

    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: "Dict[str, Any]",
        run_options: Any = None,
    ) -> "List[Any]":
        """Computes the outputs named (all, in graph order, for None) for ``input_feed``.

        Returns
        -------
        list
            One entry per output: an ndarray for a tensor (int64 labels, float probabilities,
            object arrays of str for string labels), a list of dicts for a ZipMap output, as
            onnxruntime returns them.

        Raises
        ------
        ValueError
            If the input is missing, has the wrong shape, or an output name is unknown.
        TypeError
            If the input's dtype is not the graph's (onnxruntime does not convert either).
        """
        X = self._check_input(input_feed)
        if output_names is None:
            names = tuple(o.name for o in self._outputs)
        else:
            names = tuple(output_names)
            known = {o.name for o in self._outputs}
            for name in names:
                if name not in known:
                    raise ValueError(
                        f"Invalid output name: {name!r}; the graph's outputs are {sorted(known)}"
                    )
        if self._log_output:
            trunk_value = self._model.predict_log_proba(X)
        else:
            trunk_value = self._model.predict_proba(X)
        if trunk_value.ndim == 1:  # fastmlp's single-sample form; ONNX keeps the rows axis
            trunk_value = trunk_value.reshape(1, -1)
        values: Dict[str, Any] = {self._trunk_output: trunk_value, self._input_name: X}
        constants = self._constants
        for index in self._plan(names):
            function, inputs, outputs = self._post[index]
            arguments = [values[name] if name in values else constants.get(name) for name in inputs]
            for name, value in zip(outputs, function(arguments)):
                values[name] = value
        return [values[name] for name in names]

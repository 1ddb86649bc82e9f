"""ONNX files: reading a dense network out of a graph, and writing an ``MLP`` as one.

Only the ``onnx`` package is needed (``pip install "fastmlp[onnx]"``), and only when a function
here is called. A file is parsed from its bytes as one protobuf message, so it can never make
us open another path: tensors stored as external data are refused, not followed.

The graphs read are single chains from one input to one output: an optional leading
``Flatten``/``Reshape`` to ``(N, K)`` and ``Mul`` by a scalar (fastmlp's ``input_scale``), then
per layer a ``Gemm`` or a ``MatMul`` (+ ``Add``), then at most one of ``Sigmoid``, ``Relu``,
``Tanh``, ``Softmax``; ``Identity`` may appear anywhere. Anything else is refused by name.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from .._common import Layer, PathLike
from .._optional import import_optional
from ..errors import WeightsFormatError
from . import metadata
from .atomic import write_atomically
from .weights import WeightsFile, check_weights

if TYPE_CHECKING:
    from .._model import MLP

__all__ = ["read_onnx", "write_onnx"]


_ACTIVATION_OPS = {"Sigmoid": "sigmoid", "Relu": "relu", "Tanh": "tanh", "Softmax": "softmax"}
_ACTIVATION_NODES = {name: op for op, name in _ACTIVATION_OPS.items()}
_DEFAULT_DOMAINS = ("", "ai.onnx")

# Opset 13 is the first where Softmax means "along one axis" (earlier opsets flatten from the
# axis on); IR version 7 is what opset 13 shipped with, so older runtimes still load the file.
_WRITE_OPSET = 13
_WRITE_IR_VERSION = 7


def _import_onnx() -> Any:
    words = {"extra": "onnx", "needed_by": "reading and writing ONNX files"}
    onnx = import_optional("onnx", package="the onnx package", **words)
    import_optional("onnx.numpy_helper", package="the onnx package", **words)  # callers use it
    return onnx


def _parse_model(onnx: Any, data: bytes, where: str) -> Any:
    """The ``ModelProto`` in ``data``, the bytes of the file ``where``; it must hold a graph."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # protobuf's DecodeError, without importing protobuf ourselves
        raise WeightsFormatError(f"{where} is not an ONNX model: {error}") from error
    if not model.HasField("graph"):
        raise WeightsFormatError(f"{where} is not an ONNX model: it holds no graph")
    return model


def _node_label(node: Any) -> str:
    name = f" {node.name!r}" if node.name else ""
    return f"{node.op_type} node{name}"


class _GraphReader:
    """Walks one ONNX graph from its input to its output, collecting dense layers."""

    def __init__(self, onnx: Any, model: Any, where: str) -> None:
        self.onnx = onnx
        self.where = where
        self.graph = model.graph
        self.opset = self._default_opset(model)
        self.constants: Dict[str, Any] = {}  # name -> TensorProto (converted on use)
        self.constant_nodes: Dict[str, Any] = {}  # output name -> Constant node
        self.consumers: Dict[str, List[Any]] = {}
        self._index_graph()

    def fail(self, message: str) -> WeightsFormatError:
        return WeightsFormatError(f"{self.where}: {message}")

    def _default_opset(self, model: Any) -> int:
        for opset in model.opset_import:
            if opset.domain in _DEFAULT_DOMAINS:
                return int(opset.version)
        raise self.fail("the model imports no version of the default ONNX operator set")

    def _check_inline_tensor(self, tensor: Any, what: str) -> None:
        if tensor.data_location == self.onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise self.fail(
                f"{what} stores its data outside the file (external data); fastmlp reads only "
                "self-contained ONNX files and never opens the paths a file names"
            )

    def _index_graph(self) -> None:
        graph = self.graph
        if graph.sparse_initializer:
            raise self.fail("sparse initializers are not supported; expected dense tensors")
        for tensor in graph.initializer:
            self._check_inline_tensor(tensor, f"initializer {tensor.name!r}")
            self.constants[tensor.name] = tensor
        for node in graph.node:
            self._check_domain(node)
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                if len(node.output) != 1:
                    raise self.fail(f"{_node_label(node)} must have exactly one output")
                self.constant_nodes[node.output[0]] = node
                continue
            for name in dict.fromkeys(node.input):  # once per node, even for Add(x, x)
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def _check_domain(self, node: Any) -> None:
        """Refuses operators outside the default ONNX domain."""
        if node.domain not in _DEFAULT_DOMAINS:
            raise self.fail(
                f"unsupported operator {node.domain}.{node.op_type} ({_node_label(node)}); "
                "only default-domain ONNX operators are read"
            )

    def constant(self, name: str, node: Any) -> np.ndarray:
        """The value of a weight tensor (an initializer or a Constant node's output)."""
        numpy_helper = self.onnx.numpy_helper
        if name in self.constants:
            tensor = self.constants[name]
        elif name in self.constant_nodes:
            tensor = self._constant_node_tensor(self.constant_nodes[name])
        else:
            raise self.fail(
                f"{_node_label(node)} reads {name!r}, which is neither the running tensor nor "
                "a constant (initializer or Constant node); the graph must be a single chain"
            )
        if isinstance(tensor, np.ndarray):
            return tensor
        try:
            return numpy_helper.to_array(tensor)
        except Exception as error:  # malformed tensor data: say where, whatever onnx raised
            raise self.fail(f"cannot read tensor {name!r}: {error}") from error

    def _constant_node_tensor(self, node: Any) -> Any:
        helper = self.onnx.helper
        if len(node.attribute) != 1:
            raise self.fail(f"{_node_label(node)} must have exactly one value attribute")
        attribute = node.attribute[0]
        value = helper.get_attribute_value(attribute)
        if attribute.name == "value":
            self._check_inline_tensor(value, _node_label(node))
            return value
        if attribute.name in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32)
        if attribute.name in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64)
        raise self.fail(
            f"{_node_label(node)} has a {attribute.name!r} attribute; expected value, "
            "value_float(s) or value_int(s)"
        )

    def float_constant(self, name: str, node: Any, what: str) -> np.ndarray:
        value = self.constant(name, node)
        if value.dtype.kind != "f":
            raise self.fail(
                f"{_node_label(node)}: {what} {name!r} has dtype {value.dtype}; expected floats"
            )
        return value

    def attributes(self, node: Any) -> Dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def check_softmax_axis(self, node: Any) -> None:
        """Refuses a Softmax or LogSoftmax that does not normalise the features of (N, out)."""
        axis = self.attributes(node).get("axis", -1 if self.opset >= 13 else 1)
        if axis not in (-1, 1):
            raise self.fail(
                f"{_node_label(node)} has axis={axis}; expected -1 or 1 (the features of (N, out))"
            )

    def chain(self) -> "tuple[str, list[Any], str]":
        """The input name, the nodes from it to the output in order, and the output name."""
        graph = self.graph
        inputs = [v.name for v in graph.input if v.name not in self.constants]
        if len(inputs) != 1:
            raise self.fail(f"expected one graph input (besides initializers), found {inputs}")
        outputs = [v.name for v in graph.output]
        if len(outputs) != 1:
            raise self.fail(f"expected one graph output, found {outputs}")
        current, nodes, visited = inputs[0], [], set()
        while current in self.consumers:
            consumers = self.consumers[current]
            if len(consumers) != 1:
                labels = ", ".join(_node_label(n) for n in consumers)
                raise self.fail(
                    f"tensor {current!r} feeds several nodes ({labels}); the graph must be a "
                    "single chain"
                )
            node = consumers[0]
            if id(node) in visited:
                raise self.fail(f"the graph has a cycle through {_node_label(node)}")
            visited.add(id(node))
            if len(node.output) != 1:
                raise self.fail(f"{_node_label(node)} has {len(node.output)} outputs; expected one")
            nodes.append(node)
            current = node.output[0]
        if current != outputs[0]:
            raise self.fail(
                f"the chain from input {inputs[0]!r} ends at {current!r}, not at the graph output "
                f"{outputs[0]!r}"
            )
        for node in graph.node:
            if node.op_type != "Constant" and id(node) not in visited:
                raise self.fail(
                    f"{_node_label(node)} is not on the path from {inputs[0]!r} to "
                    f"{outputs[0]!r}; the graph must be a single chain"
                )
        return inputs[0], nodes, outputs[0]

    def input_dims(self, name: str) -> "Optional[list[Optional[int]]]":
        """The graph input's dimensions (None where symbolic), or None if unknown."""
        for value in self.graph.input:
            if value.name == name and value.type.HasField("tensor_type"):
                tensor_type = value.type.tensor_type
                if not tensor_type.HasField("shape"):
                    return None
                return [
                    d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
                ]
        return None


def read_onnx(path: PathLike) -> "tuple[list[Layer], Optional[float]]":
    """The layers ``(W (in, out), b, activation)`` of an ONNX network of dense layers, and the
    factor of a leading ``Mul`` by a scalar (else None): what :func:`fastmlp.from_onnx` reads,
    with its exceptions."""
    onnx = _import_onnx()
    where = repr(os.fspath(path))
    model = _parse_model(onnx, pathlib.Path(path).read_bytes(), where)
    reader = _GraphReader(onnx, model, where)
    input_name, nodes, _ = reader.chain()
    layers, input_scale, flattened_to = _collect_layers(reader, input_name, nodes)
    _check_input_shape(reader, input_name, layers[0][0].shape[0], flattened_to)
    input_scale = _exact_input_scale(model, input_scale)
    return layers, input_scale


def _collect_layers(
    reader: _GraphReader, input_name: str, nodes: "list[Any]"
) -> "tuple[list[Layer], Optional[float], Optional[int]]":
    """Turns the chain's nodes into layers.

    Also returns the input scale, and for a leading Flatten or Reshape the number of features
    it flattens to (-1 when the graph does not say).
    """
    layers: List[Layer] = []
    # The layer being assembled: W, b (None until a bias is seen), activation (None until seen).
    pending: Optional[list] = None
    input_scale: Optional[float] = None
    flattened_to: Optional[int] = None

    def finish_pending() -> None:
        if pending is not None:
            W, b, activation = pending
            if b is None:
                b = np.zeros(W.shape[1], dtype=W.dtype)
            layers.append((W, b, activation or "identity"))

    def running_and_constant(node: Any) -> str:
        """For a two-input node on the running tensor: the other input's name."""
        names = list(node.input)
        if len(names) != 2 or sum(name == running for name in names) != 1:
            raise reader.fail(
                f"{_node_label(node)} must combine the running tensor {running!r} with one "
                f"constant; its inputs are {names}"
            )
        return names[1] if names[0] == running else names[0]

    running = input_name
    for node in nodes:
        op = node.op_type
        attributes = reader.attributes(node)
        before_first_layer = pending is None
        if op == "Identity":
            pass
        elif op in ("Flatten", "Reshape", "Mul"):
            if not before_first_layer:
                raise reader.fail(
                    f"{_node_label(node)} comes after a dense layer; fastmlp reads {op} only "
                    "before the first layer"
                )
            if op == "Flatten":
                if attributes.get("axis", 1) != 1:
                    raise reader.fail(
                        f"{_node_label(node)} has axis={attributes['axis']}; expected 1, "
                        "flattening (N, ...) to (N, K)"
                    )
                flattened_to = -1
            elif op == "Reshape":
                flattened_to = _reshape_features(reader, node, running, attributes)
            else:
                other = running_and_constant(node)
                scale = reader.float_constant(other, node, "scale")
                if scale.size != 1:
                    raise reader.fail(
                        f"{_node_label(node)} multiplies by a tensor of shape {scale.shape}; "
                        "fastmlp reads only a scalar input scale"
                    )
                if input_scale is not None:
                    raise reader.fail(f"{_node_label(node)} is a second input scale")
                input_scale = float(scale.reshape(()))
        elif op in ("Gemm", "MatMul"):
            finish_pending()
            W = _gemm_weights(reader, node, running, attributes)
            bias = _gemm_bias(reader, node, W, attributes) if op == "Gemm" else None
            pending = [W, bias, None]
        elif op == "Add":
            if pending is None or pending[2] is not None:
                raise reader.fail(
                    f"{_node_label(node)} does not follow a Gemm or MatMul; fastmlp reads Add "
                    "only as a dense layer's bias"
                )
            other = running_and_constant(node)
            bias = _broadcast_bias(reader, node, other, pending[0].shape[1])
            pending[1] = bias if pending[1] is None else pending[1] + bias
        elif op in _ACTIVATION_OPS:
            if pending is None:
                raise reader.fail(
                    f"{_node_label(node)} comes before any Gemm or MatMul; expected an "
                    "activation only after a dense layer"
                )
            if pending[2] is not None:
                raise reader.fail(
                    f"{_node_label(node)} follows another activation ({pending[2]}); fastmlp "
                    "layers have one activation each"
                )
            if op == "Softmax":
                reader.check_softmax_axis(node)
            pending[2] = _ACTIVATION_OPS[op]
        else:
            raise reader.fail(
                f"unsupported operator {op} ({_node_label(node)}); fastmlp reads Gemm, MatMul, "
                "Add, Sigmoid, Relu, Tanh, Softmax, Identity, and Flatten, Reshape or Mul "
                "before the first layer"
            )
        running = node.output[0]
    if pending is None:
        raise reader.fail("the graph has no Gemm or MatMul: there is no dense layer to read")
    finish_pending()
    return layers, input_scale, flattened_to


def _reshape_features(
    reader: _GraphReader, node: Any, running: str, attributes: "dict[str, Any]"
) -> int:
    """Checks a Reshape keeps the rows, flattening to (N, K); returns K, or -1 if not given."""
    if len(node.input) != 2 or node.input[0] != running:
        raise reader.fail(f"{_node_label(node)} must reshape the running tensor {running!r}")
    shape = reader.constant(node.input[1], node)
    if shape.dtype.kind not in "iu" or shape.shape != (2,):
        raise reader.fail(
            f"{_node_label(node)} reshapes to {shape.tolist()}; expected a shape (N, K) such as "
            "[0, -1] or [-1, K]"
        )
    rows, features = (int(v) for v in shape)
    keeps_rows = rows == 0 and not attributes.get("allowzero", 0)
    if (keeps_rows and (features == -1 or features > 0)) or (rows == -1 and features > 0):
        return features
    raise reader.fail(
        f"{_node_label(node)} reshapes to {shape.tolist()}; expected a shape (N, K) such as "
        "[0, -1] or [-1, K]"
    )


def _gemm_weights(
    reader: _GraphReader, node: Any, running: str, attributes: "dict[str, Any]"
) -> np.ndarray:
    """W as (in, out) for a Gemm or MatMul whose first input is the running tensor."""
    expected = 3 if node.op_type == "Gemm" else 2
    if not (2 <= len(node.input) <= expected) or node.input[0] != running:
        raise reader.fail(
            f"{_node_label(node)} must take the running tensor {running!r} as its first input "
            f"and a constant weight matrix; its inputs are {list(node.input)}"
        )
    if node.input[1] == running:
        raise reader.fail(f"{_node_label(node)} multiplies the running tensor by itself")
    W = reader.float_constant(node.input[1], node, "weight")
    if W.ndim != 2:
        raise reader.fail(
            f"{_node_label(node)}: weight {node.input[1]!r} has shape {W.shape}; expected 2-D"
        )
    if node.op_type == "Gemm":
        if attributes.get("transA", 0) != 0:
            raise reader.fail(
                f"{_node_label(node)} has transA=1; fastmlp reads Gemm with the rows as A "
                "(transA=0)"
            )
        if attributes.get("transB", 0):
            W = W.T
        alpha = _float_attribute(reader, node, attributes, "alpha")
        if alpha != 1.0:
            W = W * W.dtype.type(alpha)
    return np.ascontiguousarray(W)


def _float_attribute(
    reader: _GraphReader, node: Any, attributes: "dict[str, Any]", name: str
) -> float:
    """A Gemm's ``alpha`` or ``beta``: a finite float (default 1.0), or an error naming the file."""
    value = attributes.get(name, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise reader.fail(
            f"{_node_label(node)} has {name}={value!r:.40}; expected a finite float attribute"
        )
    return float(value)


def _gemm_bias(
    reader: _GraphReader, node: Any, W: np.ndarray, attributes: "dict[str, Any]"
) -> Optional[np.ndarray]:
    if len(node.input) < 3 or not node.input[2]:
        return None
    bias = _broadcast_bias(reader, node, node.input[2], W.shape[1])
    beta = _float_attribute(reader, node, attributes, "beta")
    return bias if beta == 1.0 else bias * bias.dtype.type(beta)


def _broadcast_bias(reader: _GraphReader, node: Any, name: str, outputs: int) -> np.ndarray:
    """A bias tensor that broadcasts over (N, out), as a vector of length out."""
    bias = reader.float_constant(name, node, "bias")
    fits = bias.ndim <= 2 and (bias.ndim == 0 or bias.shape[-1] in (1, outputs))
    if bias.ndim == 2 and bias.shape[0] != 1:
        fits = False
    if not fits:
        raise reader.fail(
            f"{_node_label(node)}: bias {name!r} has shape {bias.shape}; expected one that "
            f"broadcasts over (N, {outputs}): (), (1,), ({outputs},) or (1, {outputs})"
        )
    return np.broadcast_to(bias.reshape(-1), (outputs,)).copy()


def _check_input_shape(
    reader: _GraphReader, input_name: str, features: int, flattened_to: Optional[int]
) -> None:
    """Refuses graphs whose declared input is not (N, K) rows once flattened.

    Without a Flatten, a MatMul on a 3-D input would mix nothing across rows but keep the
    extra axis: not what fastmlp computes on (N, ...) input, so it is refused.
    """
    if flattened_to is not None and flattened_to not in (-1, features):
        raise reader.fail(
            f"the input is reshaped to {flattened_to} features but the first layer takes {features}"
        )
    dims = reader.input_dims(input_name)
    if dims is None:
        return
    if flattened_to is None and len(dims) != 2:
        raise reader.fail(
            f"input {input_name!r} has {len(dims)} dimensions and is not flattened; expected "
            f"(N, {features})"
        )
    known = [d for d in dims[1:] if d is not None]
    if dims[1:] and len(known) == len(dims) - 1 and math.prod(known) != features:
        raise reader.fail(
            f"input {input_name!r} has shape {dims}, {math.prod(known)} values per row, but "
            f"the first layer takes {features}"
        )


def _exact_input_scale(model: Any, graph_scale: Optional[float]) -> Optional[float]:
    """The graph's input scale, or the exact float fastmlp wrote beside it when they agree.

    A float32 graph holds the scale rounded to float32; the metadata keeps the Python float so
    that a model written by :func:`write_onnx` reads back equal to the original.
    """
    if graph_scale is None:
        return None
    for prop in model.metadata_props:
        if prop.key != metadata.KEY:
            continue
        try:
            recorded = json.loads(prop.value).get("input_scale")
        except (ValueError, AttributeError):
            return graph_scale
        if isinstance(recorded, float) and (
            recorded == graph_scale or float(np.float32(recorded)) == graph_scale
        ):
            return recorded
    return graph_scale


def write_onnx(model: "MLP", path: PathLike) -> pathlib.Path:
    """Writes ``model`` as :meth:`fastmlp.MLP.to_onnx` documents, replacing ``path``
    atomically if it exists (as :func:`fastmlp.save` does); returns ``path``."""
    content = onnx_bytes(model)
    path = pathlib.Path(path)
    write_atomically(path, lambda file: file.write(content))
    return path


def onnx_bytes(model: "MLP") -> bytes:
    """The ONNX file :func:`write_onnx` writes for ``model``, as bytes (needs ``onnx``)."""
    from .. import __version__

    onnx = _import_onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    element_type = helper.np_dtype_to_tensor_dtype(model.dtype)
    initializers, nodes = [], []
    running = "X"
    if model.input_scale is not None:
        scale = np.array(model.input_scale, dtype=model.dtype)
        initializers.append(numpy_helper.from_array(scale, "input_scale"))
        nodes.append(helper.make_node("Mul", ["X", "input_scale"], ["X_scaled"], name="scale"))
        running = "X_scaled"
    count = len(model.activations)
    for index, (W, b, activation) in enumerate(
        zip(model.coefs_, model.intercepts_, model.activations), start=1
    ):
        last = index == count
        initializers.append(numpy_helper.from_array(W, f"W{index}"))
        initializers.append(numpy_helper.from_array(b, f"b{index}"))
        linear_output = "Y" if last and activation == "identity" else f"Z{index}"
        nodes.append(
            helper.make_node(
                "Gemm", [running, f"W{index}", f"b{index}"], [linear_output], name=f"dense{index}"
            )
        )
        running = linear_output
        if activation != "identity":
            output = "Y" if last else f"H{index}"
            extra = {"axis": -1} if activation == "softmax" else {}
            nodes.append(
                helper.make_node(
                    _ACTIVATION_NODES[activation],
                    [running],
                    [output],
                    name=f"{activation}{index}",
                    **extra,
                )
            )
            running = output
    graph = helper.make_graph(
        nodes,
        "fastmlp",
        [helper.make_tensor_value_info("X", element_type, ["N", model.n_features_in_])],
        [helper.make_tensor_value_info("Y", element_type, ["N", model.n_outputs_])],
        initializer=initializers,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _WRITE_OPSET)],
        ir_version=_WRITE_IR_VERSION,
        producer_name="fastmlp",
        producer_version=__version__,
    )
    helper.set_model_props(onnx_model, {metadata.KEY: metadata.metadata_json(model)})
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def read_onnx_file(path: PathLike) -> WeightsFile:
    layers, input_scale = read_onnx(path)
    weights: dict[str, np.ndarray] = {}
    for number, (W, b, _) in enumerate(layers, start=1):
        weights[f"W{number}"], weights[f"b{number}"] = np.asarray(W), np.asarray(b)
    activations = tuple(activation for _, _, activation in layers)
    return WeightsFile(
        check_weights(weights, path, from_pickle=False), activations, input_scale, "onnx"
    )

"""Importers and ONNX export: each peer's own output is the ground truth fastmlp must match.

scikit-learn, onnx and onnxruntime are in the test extra, so these tests run in CI; the
``importorskip`` guards only explain a skip in a bare environment. Keras (with the jax backend)
is not in CI: its tests skip there.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp.errors import WeightsFormatError

TOLERANCE = 1e-5


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240604)


# --- scikit-learn -------------------------------------------------------------------------


def _sklearn():
    return pytest.importorskip("sklearn.neural_network", reason="scikit-learn is not installed")


def _fit(estimator, X, y):
    """Fits quietly: a few iterations are enough for weights to compare, not to converge."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def _assert_close(actual, expected, tolerance=TOLERANCE):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_sklearn_multiclass_matches_predict_proba_and_predict(rng, activation):
    neural_network = _sklearn()
    X = rng.normal(size=(120, 7))
    y = rng.choice(np.array([3, 5, 8, 9]), size=120)  # labels that are not indices
    estimator = _fit(
        neural_network.MLPClassifier(
            hidden_layer_sizes=(9, 6), activation=activation, max_iter=40, random_state=0
        ),
        X,
        y,
    )
    model = fastmlp.from_sklearn(estimator)
    assert model.activations[-1] == "softmax"
    _assert_close(model.predict_proba(X), estimator.predict_proba(X))
    np.testing.assert_array_equal(estimator.classes_[model.predict(X)], estimator.predict(X))


def test_sklearn_binary_gives_both_columns_and_class_indices(rng):
    neural_network = _sklearn()
    X = rng.normal(size=(150, 5))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "yes", "no")
    estimator = _fit(
        neural_network.MLPClassifier(hidden_layer_sizes=(6,), max_iter=60, random_state=1), X, y
    )
    assert estimator.out_activation_ == "logistic" and estimator.coefs_[-1].shape[1] == 1
    model = fastmlp.from_sklearn(estimator)
    assert model.n_outputs_ == 2
    _assert_close(model.predict_proba(X), estimator.predict_proba(X))
    np.testing.assert_array_equal(estimator.classes_[model.predict(X)], estimator.predict(X))


def test_sklearn_binary_tie_goes_to_class_zero_as_sklearn_threshold():
    neural_network = _sklearn()
    estimator = _fit(
        neural_network.MLPClassifier(
            hidden_layer_sizes=(1,), activation="identity", max_iter=2, random_state=0
        ),
        np.array([[0.0], [1.0], [2.0], [3.0]]),
        [0, 1, 0, 1],
    )
    # Weights that make the output logit z equal the input, to put z on and near the tie.
    estimator.coefs_ = [np.ones((1, 1)), np.ones((1, 1))]
    estimator.intercepts_ = [np.zeros(1), np.zeros(1)]
    z = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-3, -1e-3, 2.0, -2.0])[:, None]
    model = fastmlp.from_sklearn(estimator)
    np.testing.assert_array_equal(model.predict(z), estimator.predict(z))
    assert model.predict(z[:1])[0] == 0  # p = 0.5 exactly is not > 0.5
    np.testing.assert_array_equal(model.predict_proba(z[:1]), [[0.5, 0.5]])
    _assert_close(model.predict_proba(z), estimator.predict_proba(z))


def test_sklearn_multilabel_uses_independent_sigmoids(rng):
    neural_network = _sklearn()
    X = rng.normal(size=(100, 6))
    Y = (X[:, :3] + 0.3 * rng.normal(size=(100, 3)) > 0).astype(int)
    estimator = _fit(
        neural_network.MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=2), X, Y
    )
    model = fastmlp.from_sklearn(estimator)
    assert model.activations[-1] == "sigmoid" and model.n_outputs_ == 3
    probabilities = model.predict_proba(X)
    _assert_close(probabilities, estimator.predict_proba(X))
    np.testing.assert_array_equal((probabilities > 0.5).astype(int), estimator.predict(X))


@pytest.mark.parametrize("n_targets", [1, 3])
def test_sklearn_regressor_matches_predict(rng, n_targets):
    neural_network = _sklearn()
    X = rng.normal(size=(90, 4))
    y = X @ rng.normal(size=(4, n_targets)) + 0.1 * rng.normal(size=(90, n_targets))
    y = y[:, 0] if n_targets == 1 else y
    estimator = _fit(
        neural_network.MLPRegressor(
            hidden_layer_sizes=(10, 5), activation="tanh", max_iter=50, random_state=3
        ),
        X,
        y,
    )
    model = fastmlp.from_sklearn(estimator)
    assert model.activations[-1] == "identity"
    expected = estimator.predict(X).reshape(len(X), n_targets)
    _assert_close(model.predict(X), expected)
    _assert_close(model.predict_proba(X), expected)


def test_sklearn_float32_fit_gives_float32_model_and_estimator_is_untouched(rng):
    neural_network = _sklearn()
    X = rng.normal(size=(80, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=80)
    estimator = _fit(
        neural_network.MLPClassifier(hidden_layer_sizes=(6,), max_iter=30, random_state=4), X, y
    )
    before = [W.copy() for W in estimator.coefs_] + [b.copy() for b in estimator.intercepts_]
    model = fastmlp.from_sklearn(estimator, input_scale=0.5)
    after = estimator.coefs_ + estimator.intercepts_
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(before, after))
    assert model.dtype == np.dtype(estimator.coefs_[0].dtype)
    _assert_close(model.predict_proba(X * 2), estimator.predict_proba(X))


def test_sklearn_refuses_unfitted_and_other_estimators():
    neural_network = _sklearn()
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(NotFittedError, match="not fitted"):
        fastmlp.from_sklearn(neural_network.MLPClassifier())
    with pytest.raises(ValueError, match="MLPRegressor is not fitted"):
        fastmlp.from_sklearn(neural_network.MLPRegressor())
    with pytest.raises(TypeError, match="LogisticRegression"):
        fastmlp.from_sklearn(LogisticRegression())
    with pytest.raises(TypeError, match="MLPClassifier or MLPRegressor"):
        fastmlp.from_sklearn({"coefs_": []})


# --- ONNX graphs built with onnx.helper, run by onnxruntime --------------------------------


def _onnx():
    return pytest.importorskip("onnx", reason="the onnx package is not installed")


def _run_onnxruntime(path, X):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    return session.run(None, {graph_input.name: X})[0]


def _save_graph(path, nodes, inputs, initializers, *, dtype=np.float32, opset=13, outputs=None):
    """Writes a checked model with input "X" of shape ``inputs`` and one output "Y"."""
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("X", element, inputs)],
        outputs or [helper.make_tensor_value_info("Y", element, ["N", "out"])],
        initializer=[
            numpy_helper.from_array(np.asarray(v), name) for name, v in initializers.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_gemm_transposed_weights_like_pytorch_export(tmp_path, rng):
    helper = _onnx().helper
    weights = {
        "fc1.weight": rng.normal(size=(5, 6)).astype(np.float32),  # (out, in), transB=1
        "fc1.bias": rng.normal(size=5).astype(np.float32),
        "fc2.weight": rng.normal(size=(4, 5)).astype(np.float32),
        "fc2.bias": rng.normal(size=4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Flatten", ["X"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["z1"], transB=1),
        helper.make_node("Relu", ["z1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "fc2.weight", "fc2.bias"], ["z2"], transB=1),
        helper.make_node("Softmax", ["z2"], ["Y"], axis=-1),
    ]
    path = _save_graph(tmp_path / "gemm.onnx", nodes, ["N", 2, 3], weights)
    X = rng.normal(size=(17, 2, 3)).astype(np.float32)
    model = fastmlp.from_onnx(path)
    assert model.activations == ("relu", "softmax") and model.dtype == np.float32
    _assert_close(model.predict_proba(X), _run_onnxruntime(path, X))
    np.testing.assert_array_equal(model.predict(X), _run_onnxruntime(path, X).argmax(axis=1))


def test_onnx_matmul_add_either_order_constant_node_and_old_opset(tmp_path, rng):
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    weights = {
        "W1": rng.normal(size=(6, 5)),
        "b1": rng.normal(size=5),
        "W2": rng.normal(size=(5, 3)),
    }
    bias2 = numpy_helper.from_array(rng.normal(size=(1, 3)), "b2_value")
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["m1"]),
        helper.make_node("Add", ["b1", "m1"], ["z1"]),  # constant first
        helper.make_node("Tanh", ["z1"], ["h1"]),
        helper.make_node("Identity", ["h1"], ["h1_copy"]),
        helper.make_node("Constant", [], ["b2"], value=bias2),
        helper.make_node("MatMul", ["h1_copy", "W2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["z2"]),
        helper.make_node("Softmax", ["z2"], ["Y"]),  # opset 11: default axis 1
    ]
    path = _save_graph(
        tmp_path / "matmul.onnx", nodes, ["N", 6], weights, dtype=np.float64, opset=11
    )
    X = rng.normal(size=(23, 6))
    model = fastmlp.from_onnx(path)
    assert model.activations == ("tanh", "softmax") and model.dtype == np.float64
    _assert_close(model.predict_proba(X), _run_onnxruntime(path, X))


def test_onnx_gemm_alpha_beta_broadcast_bias_reshape_and_scale(tmp_path, rng):
    helper = _onnx().helper
    weights = {
        "shape": np.array([0, -1], dtype=np.int64),
        "scale": np.array(0.25, dtype=np.float32),
        "W1": rng.normal(size=(12, 4)).astype(np.float32),
        "c1": np.array(0.3, dtype=np.float32),  # a scalar C broadcasts over (N, out)
        "W2": rng.normal(size=(4, 2)).astype(np.float32),
        "c2": rng.normal(size=(1, 2)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["X", "shape"], ["rows"]),
        helper.make_node("Mul", ["scale", "rows"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "W1", "c1"], ["z1"], alpha=0.5, beta=2.0),
        helper.make_node("Sigmoid", ["z1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "W2", "c2"], ["Y"], beta=-1.0),
    ]
    path = _save_graph(tmp_path / "alpha.onnx", nodes, ["N", 3, 4], weights)
    X = rng.normal(size=(9, 3, 4)).astype(np.float32)
    model = fastmlp.from_onnx(path)
    assert model.activations == ("sigmoid", "identity") and model.input_scale == 0.25
    _assert_close(model.predict_proba(X), _run_onnxruntime(path, X))
    assert fastmlp.from_onnx(path, input_scale=1.0).input_scale == 1.0


def test_read_onnx_returns_layers_and_scale(tmp_path, rng):
    from fastmlp._formats.onnx import read_onnx

    _onnx()
    model = fastmlp.MLP([(rng.normal(size=(3, 2)), rng.normal(size=2), "tanh")], input_scale=2.0)
    layers, input_scale = read_onnx(model.to_onnx(tmp_path / "m.onnx"))
    assert input_scale == 2.0 and len(layers) == 1
    W, b, activation = layers[0]
    np.testing.assert_array_equal(W, model.coefs_[0])
    np.testing.assert_array_equal(b, model.intercepts_[0])
    assert activation == "tanh"


# --- MLP.to_onnx ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "activations, input_scale",
    [
        (("sigmoid", "sigmoid", "softmax"), None),
        (("relu", "tanh", "identity"), 1 / 255),
        (("identity", "relu", "sigmoid"), 0.1),
    ],
)
def test_to_onnx_runs_in_onnxruntime_and_reads_back_equal(
    tmp_path, rng, dtype, activations, input_scale
):
    _onnx()
    sizes = [8, 7, 5, 3]
    layers = [
        (rng.normal(size=(n_in, n_out)), rng.normal(size=n_out), activation)
        for n_in, n_out, activation in zip(sizes, sizes[1:], activations)
    ]
    model = fastmlp.MLP(layers, input_scale=input_scale, dtype=dtype)
    path = model.to_onnx(tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx" and path.is_file()
    X = rng.uniform(0, 255 if input_scale else 2, size=(31, 8)).astype(dtype)
    _assert_close(_run_onnxruntime(path, X), model.predict_proba(X))
    again = fastmlp.from_onnx(path)
    assert again == model
    assert again.input_scale == model.input_scale


def test_to_onnx_declares_input_x_with_symbolic_rows(tmp_path, rng):
    onnx = _onnx()
    W, b = rng.normal(size=(4, 2)).astype(np.float32), np.zeros(2, dtype=np.float32)
    model = fastmlp.MLP([(W, b, "softmax")])
    written = onnx.load(str(model.to_onnx(str(tmp_path / "m.onnx"))))
    (graph_input,) = written.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "X" and [dims[0].dim_param, dims[1].dim_value] == ["N", 4]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert max(o.version for o in written.opset_import if o.domain == "") >= 13


def test_failed_to_onnx_leaves_the_old_file_and_no_temporary(tmp_path, rng, monkeypatch):
    _onnx()
    from fastmlp._formats import atomic

    target = tmp_path / "m.onnx"
    fastmlp.MLP([(rng.normal(size=(4, 2)), np.zeros(2), "softmax")]).to_onnx(target)
    before = target.read_bytes()

    def disk_full(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        fastmlp.MLP([(rng.normal(size=(4, 3)), np.zeros(3), "relu")]).to_onnx(target)
    assert target.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == [target.name]


# --- ONNX files fastmlp refuses ------------------------------------------------------------


def _dense_graph_with(tmp_path, rng, op_type, **attributes):
    helper = _onnx().helper
    weights = {"W": rng.normal(size=(4, 3)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["z"]),
        helper.make_node(op_type, ["z"], ["Y"], name="the_odd_one", **attributes),
    ]
    return _save_graph(tmp_path / f"{op_type}.onnx", nodes, ["N", 4], weights)


@pytest.mark.parametrize("op_type", ["LeakyRelu", "Elu", "LogSoftmax"])
def test_onnx_unsupported_op_names_itself_and_its_node(tmp_path, rng, op_type):
    path = _dense_graph_with(tmp_path, rng, op_type)
    with pytest.raises(WeightsFormatError, match=f"{op_type}.*the_odd_one"):
        fastmlp.from_onnx(path)


def test_onnx_conv_is_refused_by_name(tmp_path, rng):
    helper = _onnx().helper
    weights = {"K": rng.normal(size=(2, 1, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["X", "K"], ["Y"], name="conv1")]
    path = _save_graph(tmp_path / "conv.onnx", nodes, ["N", 1, 5, 5], weights)
    with pytest.raises(ValueError, match="unsupported operator Conv .*'conv1'"):
        fastmlp.from_onnx(path)


def test_onnx_softmax_over_rows_is_refused(tmp_path, rng):
    path = _dense_graph_with(tmp_path, rng, "Softmax", axis=0)
    with pytest.raises(WeightsFormatError, match="axis=0"):
        fastmlp.from_onnx(path)


def test_onnx_external_data_is_refused_without_opening_it(tmp_path, rng, monkeypatch):
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    W = rng.normal(size=(4, 3)).astype(np.float32)
    (tmp_path / "weights.bin").write_bytes(W.tobytes())  # a valid target, so only a refusal fails
    tensor = numpy_helper.from_array(W, "W")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "external",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, ["N", 3])],
        initializer=[tensor],
    )
    path = tmp_path / "external.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    opened = []
    real_open = open

    def recording_open(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", recording_open)
    with pytest.raises(WeightsFormatError, match="external data"):
        fastmlp.from_onnx(path)
    assert not any(str(name).endswith("weights.bin") for name in opened)


def test_onnx_branching_graph_is_refused(tmp_path, rng):
    helper = _onnx().helper
    weights = {"A": rng.normal(size=(4, 3)), "B": rng.normal(size=(4, 3))}
    nodes = [
        helper.make_node("MatMul", ["X", "A"], ["a"]),
        helper.make_node("MatMul", ["X", "B"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["Y"]),
    ]
    path = _save_graph(tmp_path / "branch.onnx", nodes, ["N", 4], weights, dtype=np.float64)
    with pytest.raises(WeightsFormatError, match="single chain"):
        fastmlp.from_onnx(path)


def test_onnx_transposed_rows_and_stacked_activations_are_refused(tmp_path, rng):
    helper = _onnx().helper
    weights = {"W": rng.normal(size=(4, 3)).astype(np.float32)}
    transposed = [helper.make_node("Gemm", ["X", "W"], ["Y"], transA=1)]
    path = _save_graph(tmp_path / "transA.onnx", transposed, [4, "N"], weights)
    with pytest.raises(WeightsFormatError, match="transA=1"):
        fastmlp.from_onnx(path)
    stacked = [
        helper.make_node("MatMul", ["X", "W"], ["z"]),
        helper.make_node("Relu", ["z"], ["h"]),
        helper.make_node("Sigmoid", ["h"], ["Y"]),
    ]
    path = _save_graph(tmp_path / "stacked.onnx", stacked, ["N", 4], weights)
    with pytest.raises(WeightsFormatError, match="follows another activation"):
        fastmlp.from_onnx(path)


def test_onnx_unflattened_input_is_refused(tmp_path, rng):
    helper = _onnx().helper
    weights = {"W": rng.normal(size=(4, 3)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"])]
    path = _save_graph(tmp_path / "rank3.onnx", nodes, ["N", 2, 4], weights)
    with pytest.raises(WeightsFormatError, match="3 dimensions and is not flattened"):
        fastmlp.from_onnx(path)


def test_onnx_garbage_file_is_a_weights_format_error(tmp_path):
    _onnx()
    path = tmp_path / "not.onnx"
    path.write_bytes(b"\x08\x07\xff\xff\xff garbage")
    with pytest.raises(WeightsFormatError, match="not an ONNX model"):
        fastmlp.from_onnx(path)


def test_missing_onnx_package_names_the_extra(tmp_path, monkeypatch):
    model = fastmlp.MLP([(np.ones((2, 2)), np.zeros(2), "softmax")])
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ImportError, match=r"fastmlp\[onnx\]"):
        model.to_onnx(tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=r"fastmlp\[onnx\]"):
        fastmlp.from_onnx(tmp_path / "m.onnx")


# --- Keras (not in CI: skipped there) ------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras", reason="Keras is not installed (not in the test extra)")


def test_keras_sequential_matches_model_predict(keras, rng):
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(3, 4)),
            layers.Flatten(),
            layers.Dense(10, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(6, activation="tanh"),
            layers.Dense(8),
            layers.Activation("sigmoid"),
            layers.Dense(5),
            layers.Softmax(),
        ]
    )
    X = rng.normal(size=(21, 3, 4)).astype(np.float32)
    imported = fastmlp.from_keras(model)
    assert imported.activations == ("relu", "tanh", "sigmoid", "softmax")
    expected = model.predict(X, verbose=0)
    _assert_close(imported.predict_proba(X), expected)
    np.testing.assert_array_equal(imported.predict(X), expected.argmax(axis=1))


def test_keras_activation_layers_linear_output_and_no_bias(keras, rng):
    layers = keras.layers
    stacked = keras.Sequential([layers.Dense(4, activation="sigmoid"), layers.ReLU()])
    stacked.build((None, 5))
    with pytest.raises(ValueError, match="already applies sigmoid"):
        fastmlp.from_keras(stacked)
    model = keras.Sequential(
        [keras.Input(shape=(5,)), layers.Dense(4, use_bias=False), layers.ReLU(), layers.Dense(2)]
    )
    X = rng.normal(size=(12, 5)).astype(np.float32)
    imported = fastmlp.from_keras(model)
    assert imported.activations == ("relu", "identity")
    _assert_close(imported.predict_proba(X), model.predict(X, verbose=0))


def test_keras_refuses_unknown_layers_and_activations(keras):
    layers = keras.layers
    with pytest.raises(ValueError, match="BatchNormalization"):
        fastmlp.from_keras(
            keras.Sequential(
                [keras.Input(shape=(3,)), layers.Dense(2), layers.BatchNormalization()]
            )
        )
    with pytest.raises(ValueError, match="'gelu'"):
        fastmlp.from_keras(keras.Sequential([keras.Input(shape=(3,)), layers.Dense(2, "gelu")]))
    with pytest.raises(ValueError, match="not built"):
        fastmlp.from_keras(keras.Sequential([layers.Dense(2)]))
    with pytest.raises(ValueError, match="put a Flatten before it"):
        fastmlp.from_keras(keras.Sequential([keras.Input(shape=(2, 3)), layers.Dense(2)]))
    with pytest.raises(TypeError, match="keras.Sequential"):
        fastmlp.from_keras(layers.Dense(2))

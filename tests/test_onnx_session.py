"""fastmlp.onnx.InferenceSession against onnxruntime, on the files real exporters write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastmlp  # noqa: E402
import fastmlp.onnx  # noqa: E402
from fastmlp.onnx import InferenceSession  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _ort_session(source):
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _describe(args):
    return [(a.name, list(a.shape), a.type) for a in args]


def _assert_same_outputs(got, expected):
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        if isinstance(theirs, list):  # ZipMap: a list of {label: probability}
            assert isinstance(ours, list) and len(ours) == len(theirs)
            for row_ours, row_theirs in zip(ours, theirs):
                assert list(row_ours) == list(row_theirs)  # same labels, same order, same types
                assert [type(k) for k in row_ours] == [type(k) for k in row_theirs]
                np.testing.assert_allclose(
                    list(row_ours.values()), list(row_theirs.values()), atol=1e-5
                )
                assert all(type(v) is float for v in row_ours.values())
            continue
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        if theirs.dtype.kind in "iuOUb":
            np.testing.assert_array_equal(ours, theirs)  # labels identical
        else:
            np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def _compare(source, X, output_names=None):
    ours, theirs = InferenceSession(source), _ort_session(source)
    assert _describe(ours.get_inputs()) == _describe(theirs.get_inputs())
    assert _describe(ours.get_outputs()) == _describe(theirs.get_outputs())
    name = theirs.get_inputs()[0].name
    got = ours.run(output_names, {name: X})
    _assert_same_outputs(got, theirs.run(output_names, {name: X}))
    return got


# --- skl2onnx ----------------------------------------------------------------------------------


def _skl2onnx_model(estimator, X, **options):
    skl2onnx = pytest.importorskip("skl2onnx")
    kwargs = {"options": {id(estimator): options}} if options else {}
    return skl2onnx.to_onnx(estimator, X[:1], **kwargs).SerializeToString()


def _fit_classifier(rng, labels, dtype=np.float32, activation="relu"):
    from sklearn.neural_network import MLPClassifier

    X = rng.normal(size=(150, 6)).astype(dtype)
    y = labels[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int) * (len(labels) > 2)]
    clf = MLPClassifier(hidden_layer_sizes=(10, 6), activation=activation, max_iter=300)
    return clf.fit(X, y), X


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
@pytest.mark.parametrize(
    "labels",
    [np.array([3, 5, 9]), np.array(["ant", "bee", "cat"]), np.array([0, 1])],
    ids=["int", "str", "binary"],
)
@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh"])
def test_skl2onnx_classifier(rng, labels, zipmap, activation):
    clf, X = _fit_classifier(rng, labels, activation=activation)
    model = _skl2onnx_model(clf, X, **({} if zipmap else {"zipmap": False}))
    X_new = rng.normal(size=(40, 6)).astype(np.float32)
    label, proba = _compare(model, X_new)
    np.testing.assert_array_equal(label, clf.predict(X_new))
    if not zipmap:
        np.testing.assert_allclose(proba, clf.predict_proba(X_new), atol=1e-5)
    _compare(model, X_new[:1])  # one row
    only_label = InferenceSession(model).run([_label_name(model)], {"X": X_new})
    assert len(only_label) == 1
    np.testing.assert_array_equal(only_label[0], label)


def _label_name(model_bytes):
    return _ort_session(model_bytes).get_outputs()[0].name


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_skl2onnx_classifier_in_float64(rng):
    clf, X = _fit_classifier(rng, np.array([0, 1, 2]), dtype=np.float64)
    model = _skl2onnx_model(clf, X, zipmap=False)
    X_new = rng.normal(size=(30, 6))
    _, proba = _compare(model, X_new)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, clf.predict_proba(X_new), atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("targets", [1, 3])
def test_skl2onnx_regressor(rng, targets):
    from sklearn.neural_network import MLPRegressor

    X = rng.normal(size=(100, 5)).astype(np.float32)
    y = X @ rng.normal(size=(5, targets))
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=200).fit(X, y[:, 0] if targets == 1 else y)
    model = _skl2onnx_model(reg, X)
    (values,) = _compare(model, X)
    # skl2onnx reshapes to (-1, 1) whatever the targets: (N * targets, 1), as onnxruntime gives.
    assert values.shape == (len(X) * targets, 1)
    np.testing.assert_allclose(
        values.reshape(len(X), -1), reg.predict(X).reshape(len(X), -1), atol=1e-4
    )


# --- torch.onnx.export fixtures (made by tests/fixtures/make_torch_onnx.py) ------------------


@pytest.mark.parametrize("name", ["softmax", "logsoftmax", "regressor"])
def test_torch_exports(name):
    path = FIXTURES / f"torch_sequential_{name}.onnx"
    expected = np.load(FIXTURES / "torch_sequential_expected.npz")
    X = expected[f"{name}_X"]
    (got,) = _compare(str(path), X)
    np.testing.assert_allclose(got, expected[f"{name}_Y"], atol=1e-5)
    _compare(path, X[:1])  # a pathlib.Path, one row
    _compare(path.read_bytes(), np.repeat(X, 50, axis=0))  # bytes, a larger batch


def test_torch_export_with_another_operator_is_refused():
    path = FIXTURES / "torch_sequential_gelu.onnx"
    _ort_session(str(path))  # onnxruntime runs it
    with pytest.raises(fastmlp.WeightsFormatError) as error:
        InferenceSession(str(path))
    message = str(error.value)
    assert "Gelu" in message and "node" in message and "onnxruntime" in message


# --- fastmlp's own to_onnx ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [None, 1 / 255])
def test_fastmlp_to_onnx(tmp_path, rng, dtype, scale):
    model = fastmlp.MLP(
        [
            (rng.normal(size=(8, 16)), rng.normal(size=16), "sigmoid"),
            (rng.normal(size=(16, 4)), rng.normal(size=4), "softmax"),
        ],
        input_scale=scale,
        dtype=dtype,
    )
    path = model.to_onnx(tmp_path / "model.onnx")
    X = rng.uniform(0, 255, size=(25, 8)).astype(dtype)
    (got,) = _compare(str(path), X)
    np.testing.assert_allclose(got, model.predict_proba(X), atol=1e-6)


# --- ONNX Runtime's errors, in fastmlp's words ------------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bad_calls_are_refused(rng):
    clf, X = _fit_classifier(rng, np.array([0, 1, 2]))
    session = InferenceSession(_skl2onnx_model(clf, X))
    with pytest.raises(TypeError, match=r"float64.*tensor\(float\)"):
        session.run(None, {"X": X.astype(np.float64)})
    with pytest.raises(ValueError, match="missing"):
        session.run(None, {"Y": X})
    with pytest.raises(ValueError, match="rank"):
        session.run(None, {"X": X[0]})
    with pytest.raises(ValueError, match="expects"):
        session.run(None, {"X": X[:, :3]})
    with pytest.raises(ValueError, match="Invalid output name"):
        session.run(["nope"], {"X": X})
    with pytest.raises(TypeError, match="input_feed"):
        session.run(None, X)
    # A list is converted to the declared type, as onnxruntime does.
    np.testing.assert_array_equal(session.run(None, {"X": X[:2].tolist()})[0], clf.predict(X[:2]))


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\x01not a protobuf at all\xff" * 10)
    with pytest.raises(fastmlp.WeightsFormatError, match="not an ONNX model"):
        InferenceSession(str(path))
    with pytest.raises(TypeError, match="path_or_bytes"):
        InferenceSession(12)


def test_other_operators_are_refused_by_name(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(np.ones((3, 2), np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["Z"], name="dense"),
        helper.make_node("LeakyRelu", ["Z"], ["Y"], name="leaky"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])],
        initializer=[W],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(fastmlp.WeightsFormatError, match=r"LeakyRelu.*'leaky'.*onnxruntime"):
        InferenceSession(model.SerializeToString())

"""ONNX export (xpcnn.export): onnxruntime against xpcnn on every zoo network and 50 seeded random
networks covering every layer option, the known traps one by one, float64, import back, foreign
graphs, and the CLI."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import cli, layers, zoo
from xpcnn.errors import ArgumentError, ExportError, ModelFileError, ShapeError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from xpcnn.export import OnnxModel, from_onnx, to_onnx  # noqa: E402

PARITY = 1e-5  # float32: onnxruntime vs xpcnn, relative to the largest output (issue 22)


def randomize(model, rng):
    """Random biases and BatchNorm statistics (the built ones are zeros and ones: too easy)."""
    weights = []
    for _, layer, name in model.named_parameters():
        w = xpcnn.to_numpy(layer.params[name])
        if isinstance(layer, (layers.BatchNorm1D, layers.BatchNorm2D)):
            w = rng.uniform(0.5, 1.5, w.shape) if name == "weight" else rng.normal(0, 0.2, w.shape)
        elif name == "bias":
            w = rng.normal(0, 0.2, w.shape)
        weights.append(w)
    model.set_weights(weights)
    model.set_buffers([rng.normal(0, 0.2, b.shape) if key.endswith("mean") else rng.uniform(0.5, 1.5, b.shape)
                       for key, b in zip((k for k, _, _ in model.named_buffers()), model.get_buffers())])
    return model


def check_parity(model, path, rng, *, output="logits", batches=(1, 33), tolerance=PARITY, **options):
    """Export, check the graph (full_check), run it at each batch size; returns the worst relative error."""
    proto = to_onnx(model, path, output=output, **options)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    runtime, worst = OnnxModel(path, threads=1), 0.0
    for n in batches:
        x = rng.standard_normal((n, *model.input_shape)).astype(model.dtype)
        expected = xpcnn.to_numpy(model.predict(x) if output == "probabilities" else model(x))
        got = runtime.run(x)
        assert got.shape == expected.shape and got.dtype == (options.get("dtype") or model.dtype)
        scale = np.abs(expected).max()
        assert scale > 0
        worst = max(worst, np.abs(got - expected).max() / scale)
    assert worst <= tolerance, f"{path.name}: relative error {worst:.3g}"
    return worst


# ---------------------------------------------------------------- the zoo


@pytest.mark.parametrize("name", ["default", "notebook", "resnet8"])
def test_zoo_network_runs_the_same_in_onnxruntime(name, tmp_path):
    rng = np.random.default_rng(0)
    model = randomize(zoo.get(name).build((1, 28, 28), seed=1), rng)
    model.class_names = [f"digit {i}" for i in range(10)]
    check_parity(model, tmp_path / "m.onnx", rng)
    check_parity(model, tmp_path / "p.onnx", rng, output="probabilities")
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(meta["class_names"]) == model.class_names and meta["xpcnn_version"] == xpcnn.__version__
    runtime = OnnxModel(tmp_path / "m.onnx")
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    assert runtime.class_names == model.class_names and runtime.predict_classes(x) == model.predict_classes(x)
    back = from_onnx(tmp_path / "m.onnx")
    assert np.array_equal(xpcnn.to_numpy(back.predict(x)), xpcnn.to_numpy(model.fold_batchnorm().predict(x)))
    assert back.class_names == model.class_names and back.get_config() == model.fold_batchnorm().get_config()


# ---------------------------------------------------------------- random networks


def activation(rng, tags):
    kind = rng.choice(["relu", "leaky", "tanh", "sigmoid", "gelu-tanh", "gelu-none"])
    tags.add(f"act:{kind}")
    return {"relu": layers.ReLU(), "leaky": layers.LeakyReLU(float(rng.uniform(0.01, 0.3))), "tanh": layers.Tanh(),
            "sigmoid": layers.Sigmoid(), "gelu-tanh": layers.GELU(), "gelu-none": layers.GELU(approximate="none")}[kind]


def conv_padding(rng, tags, stride):
    kind = rng.choice(["int", "pair", "asym", "same", "valid"] if stride == 1 else ["int", "pair", "asym", "valid"])
    tags.add(f"conv:pad-{kind}")
    sides = [int(v) for v in rng.integers(0, 3, 4)]
    return {"int": sides[0], "pair": tuple(sides[:2]), "asym": ((sides[0], sides[1]), (sides[2], sides[3])),
            "same": "same", "valid": "valid"}[kind]


def conv(rng, tags, c, *, out=None, transpose=False):
    groups = int(rng.choice([g for g in (1, 2, 3) if c % g == 0]))
    out = out or groups * int(rng.integers(1, 4))
    kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    stride, dilation = int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2]))
    bias = bool(rng.random() < 0.7)
    tags.update({f"groups>1:{transpose}"} if groups > 1 else set())
    tags.update({f"stride2:{transpose}"} if stride > 1 else set())
    tags.update({f"dilation2:{transpose}"} if dilation > 1 else set())
    tags.add(f"bias:{bias}")
    if transpose:
        output_padding = int(rng.integers(0, max(stride, dilation)))
        tags.update({"convT:output_padding"} if output_padding else set())
        return layers.Conv2DTranspose(out, kernel, stride=stride, padding=int(rng.integers(0, 2)), groups=groups,
                                      output_padding=output_padding, dilation=dilation, bias=bias)
    return layers.Conv2D(out, kernel, stride=stride, padding=conv_padding(rng, tags, stride), dilation=dilation,
                         groups=groups, bias=bias)


def pool(rng, tags):
    kernel = (int(rng.integers(2, 4)), int(rng.integers(2, 4)))
    stride = None if rng.random() < 0.3 else (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    padding = ((int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[0] // 2 + 1))),
               (int(rng.integers(0, kernel[1] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1))))
    ceil_mode = bool(rng.random() < 0.5)
    tags.update({"pool:ceil"} if ceil_mode else set())
    tags.update({"pool:asym-padding"} if padding[0][0] != padding[0][1] or padding[1][0] != padding[1][1] else set())
    if rng.random() < 0.5:
        tags.add("maxpool")
        return layers.MaxPool2D(kernel, stride, padding, ceil_mode=ceil_mode)
    include = bool(rng.random() < 0.5)
    tags.update({"avgpool:exclude-pad-with-padding"} if not include and any(map(any, padding)) else set())
    return layers.AvgPool2D(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=include)


def residual(rng, tags, c, depth=0):
    same = "same" if rng.random() < 0.5 else 1
    block = [layers.Conv2D(c, 3, padding=same), layers.BatchNorm2D(), activation(rng, tags)]
    if depth == 0 and rng.random() < 0.5:
        tags.add("residual:nested")
        block.append(residual(rng, tags, c, depth + 1))
    if rng.random() < 0.5:
        tags.add("residual:shortcut")
        return layers.Residual(block + [layers.Conv2D(c + 1, 3, padding=same)], [layers.Conv2D(c + 1, 1)])
    return layers.Residual(block + [layers.Conv2D(c, 3, padding=1, bias=False)])


def augmentation(rng, tags, shape):
    c, h, w = shape
    kind = rng.choice(["flip", "translate", "crop", "crop-pad", "normalize"])
    tags.add(f"augment:{kind}")
    if kind == "crop-pad":
        return layers.RandomCrop((h - 1, w), padding=(1, 2))
    return {"flip": layers.RandomFlip(str(rng.choice(layers.RandomFlip.MODES))),
            "translate": layers.RandomTranslation(0.2, 0.1), "crop": layers.RandomCrop((h - 2, w - 3)),
            "normalize": layers.Normalize([float(v) for v in rng.normal(0, 1, c)], list(rng.uniform(0.5, 2, c)))}[kind]


def feature_layer(rng, tags, kind, c):
    if kind in ("conv", "convT"):
        return conv(rng, tags, c, transpose=kind == "convT")
    if kind == "pool":
        return pool(rng, tags)
    if kind == "residual":
        return residual(rng, tags, c)
    return {"bn": layers.BatchNorm2D(), "act": activation(rng, tags), "dropout": layers.Dropout(0.3)}[kind]


def random_network(index, tags):
    """A seeded random network on (C, H, W) input: augmentation, 2-4 feature layers (conv,
    transposed conv, pools, BatchNorm, activations, Dropout, residual blocks), then a head
    (Flatten or GlobalAvgPool2D, maybe Dense + BatchNorm1D + activation + Dropout, Dense)."""
    rng = np.random.default_rng(index)
    shape = (int(rng.integers(1, 4)), int(rng.integers(8, 13)), int(rng.integers(8, 13)))
    stack, current = [augmentation(rng, tags, shape)] if rng.random() < 0.4 else [], shape
    while len(stack) < 4 + (index % 3):
        kind = rng.choice(["conv", "conv", "convT", "pool", "bn", "act", "dropout", "residual"])
        try:
            layer = feature_layer(rng, tags, kind, current[0])
            out = layer.output_shape(current)
        except (ShapeError, ArgumentError):
            continue
        if min(out[1:]) >= 2 and max(out[1:]) <= 16:
            stack.append(layer)
            current = out
    head = [layers.Flatten()] if rng.random() < 0.5 else [layers.GlobalAvgPool2D()]
    if rng.random() < 0.5:
        tags.add("head:hidden")
        head += [layers.Dense(int(rng.integers(3, 9))), layers.BatchNorm1D(), activation(rng, tags), layers.Dropout()]
    model = xpcnn.Sequential(stack + head + [layers.Dense(int(rng.integers(2, 6)), bias=bool(rng.random() < 0.8))])
    tags.update(type(layer).__name__ for _, layer in model.walk())
    return randomize(model.build(shape, seed=index), rng)


RANDOM_NETWORKS = 50


@pytest.mark.parametrize("index", range(RANDOM_NETWORKS))
def test_random_network_runs_the_same_in_onnxruntime(index, tmp_path):
    model = random_network(index, set())
    output = "probabilities" if index % 5 == 0 else "logits"
    check_parity(model, tmp_path / "r.onnx", np.random.default_rng(index), output=output)
    if index % 10 == 0:
        x = np.random.default_rng(1).standard_normal((3, *model.input_shape)).astype(np.float32)
        assert np.array_equal(xpcnn.to_numpy(from_onnx(tmp_path / "r.onnx").predict(x)),
                              xpcnn.to_numpy(model.fold_batchnorm().predict(x)))


def test_the_random_networks_cover_every_layer_and_option():
    tags = set()
    for index in range(RANDOM_NETWORKS):
        random_network(index, tags)
    expected = {
        "Conv2D", "Conv2DTranspose", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dense", "Flatten", "BatchNorm1D",
        "BatchNorm2D", "Dropout", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "GELU", "Residual", "RandomFlip",
        "RandomCrop", "RandomTranslation", "Normalize", "residual:nested", "residual:shortcut", "head:hidden",
        "bias:False", "groups>1:False", "groups>1:True", "stride2:False", "stride2:True", "dilation2:False",
        "dilation2:True", "convT:output_padding", "pool:ceil", "pool:asym-padding", "maxpool",
        "avgpool:exclude-pad-with-padding", "act:gelu-none", "act:gelu-tanh", "augment:crop-pad",
        *(f"conv:pad-{kind}" for kind in ("int", "pair", "asym", "same", "valid")),
    }
    assert not expected - tags, f"not covered: {sorted(expected - tags)}"


# ---------------------------------------------------------------- the traps, one by one


def single_layer_model(layer, shape=(2, 9, 7), dtype="float32"):
    return randomize(xpcnn.Sequential([layer, layers.Flatten()]).build(shape, dtype=dtype), np.random.default_rng(0))


def node_attributes(path, op):
    node = next(n for n in onnx.load(path).graph.node if n.op_type == op)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_pads_are_written_top_left_bottom_right(tmp_path):
    for layer in (layers.Conv2D(3, (3, 2), padding=((0, 2), (1, 0))), layers.MaxPool2D(3, 2, ((0, 1), (1, 0)))):
        model = single_layer_model(layer)
        check_parity(model, tmp_path / "m.onnx", np.random.default_rng(1))
        assert node_attributes(tmp_path / "m.onnx", "Conv" if isinstance(layer, layers.Conv2D) else "MaxPool")[
            "pads"] == [0, 1, 1 if isinstance(layer, layers.MaxPool2D) else 2, 0]


@pytest.mark.parametrize("kind", ["max", "avg", "avg-exclude"])
def test_ceil_mode_is_floor_mode_with_the_bottom_right_padding_extended(kind, tmp_path):
    torch = pytest.importorskip("torch")
    options = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    layer = layers.MaxPool2D(**options) if kind == "max" else \
        layers.AvgPool2D(**options, count_include_pad=kind == "avg")
    model = single_layer_model(layer, shape=(1, 8, 10))
    assert layer.geometry.out_hw == (5, 6) and layer.geometry.padding == ((1, 2), (1, 2))  # floor mode gives (4, 5)
    check_parity(model, tmp_path / "m.onnx", np.random.default_rng(2))
    attributes = node_attributes(tmp_path / "m.onnx", "MaxPool" if kind == "max" else "AveragePool")
    assert attributes["pads"] == [1, 1, 2, 2] and attributes.get("ceil_mode", 0) == 0
    x = np.random.default_rng(3).standard_normal((4, 1, 8, 10)).astype(np.float32)
    pooled = (torch.nn.functional.max_pool2d(torch.from_numpy(x), **options) if kind == "max" else
              torch.nn.functional.avg_pool2d(torch.from_numpy(x), **options, count_include_pad=kind == "avg"))
    got = OnnxModel(tmp_path / "m.onnx").run(x)
    np.testing.assert_allclose(got, pooled.reshape(4, -1).numpy(), rtol=1e-6, atol=1e-6)


def test_average_pool_without_the_padding_in_the_count_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model = single_layer_model(layers.AvgPool2D(3, 2, padding=(1, 1), count_include_pad=False), shape=(2, 7, 9))
    check_parity(model, tmp_path / "m.onnx", np.random.default_rng(4))
    x = np.random.default_rng(5).standard_normal((3, 2, 7, 9)).astype(np.float32)
    expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx").run(x), expected.reshape(3, -1).numpy(), rtol=1e-6,
                               atol=PARITY)


def test_dense_weight_stays_in_out(tmp_path):
    model = randomize(xpcnn.Sequential([layers.Flatten(), layers.Dense(7), layers.ReLU(), layers.Dense(3)])
                      .build((1, 2, 5)), np.random.default_rng(6))
    check_parity(model, tmp_path / "m.onnx", np.random.default_rng(7))
    proto = onnx.load(tmp_path / "m.onnx")
    weights = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    assert weights["1.weight"] == (10, 7) and weights["3.weight"] == (7, 3)
    assert all(a.name != "transB" for n in proto.graph.node if n.op_type == "Gemm" for a in n.attribute)


# ---------------------------------------------------------------- dtypes, options, refusals


def test_float64_exports_as_float64_or_says_which_op_cannot(tmp_path):
    mlp = randomize(xpcnn.Sequential([layers.Flatten(), layers.Dense(6), layers.BatchNorm1D(), layers.Tanh(),
                                      layers.GELU(), layers.Dense(4)])
                    .build((1, 3, 4), dtype="float64"), np.random.default_rng(8))
    assert check_parity(mlp, tmp_path / "m.onnx", np.random.default_rng(9), tolerance=1e-12) <= 1e-12
    assert OnnxModel(tmp_path / "m.onnx").dtype == "float64"
    cnn = zoo.get("notebook").build((1, 28, 28), dtype="float64")
    with pytest.raises(ExportError, match=r"layer 0 \(Conv2D\).*float64 kernel for ONNX Conv.*dtype='float32'"):
        to_onnx(cnn, tmp_path / "c.onnx")
    check_parity(cnn, tmp_path / "c.onnx", np.random.default_rng(10), dtype="float32", tolerance=1e-5)


def test_float64_attributes_are_constants_in_float64(tmp_path):
    # ONNX's epsilon and alpha attributes are float32: eps = 0.1 against a small variance and a
    # slope of 0.1 rounded to float32 were 1e-8 away; as float64 constants they are exact.
    model = randomize(xpcnn.Sequential([layers.Flatten(), layers.Dense(5), layers.BatchNorm1D(eps=0.1),
                                        layers.LeakyReLU(0.1), layers.Dense(3)])
                      .build((1, 2, 3), dtype="float64"), np.random.default_rng(30))
    model.set_buffers([b * 1e-3 if key.endswith("var") else b
                       for (key, _, _), b in zip(model.named_buffers(), model.get_buffers())])
    assert check_parity(model, tmp_path / "m.onnx", np.random.default_rng(31), tolerance=1e-12) <= 1e-12
    with pytest.raises(ExportError, match=r"layer 3 \(LeakyReLU\).*PRelu before opset 16.*opset=16"):
        to_onnx(model, tmp_path / "m13.onnx", opset=13)
    check_parity(model, tmp_path / "m13.onnx", np.random.default_rng(32), opset=13, dtype="float32")


def test_conv_transpose_whose_output_rows_are_all_output_padding(tmp_path):
    # Padding 1 crops the only row of the uncropped output; output_padding 2 adds two rows of
    # bias: PyTorch's output is the bias alone, and the ConvTranspose node alone would have no row.
    torch = pytest.importorskip("torch")
    layer = layers.Conv2DTranspose(2, 1, stride=3, padding=1, output_padding=2)
    model = randomize(xpcnn.Sequential([layer, layers.Flatten()]).build((1, 1, 2)), np.random.default_rng(33))
    assert layer.geometry.out_hw == (1, 4)
    check_parity(model, tmp_path / "m.onnx", np.random.default_rng(34))
    x = np.random.default_rng(35).standard_normal((3, 1, 1, 2)).astype(np.float32)
    w, b = (torch.from_numpy(xpcnn.to_numpy(a)) for a in (layer.params["weight"], layer.params["bias"]))
    expected = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), w, b, stride=3, padding=1, output_padding=2)
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx").run(x), expected.reshape(3, -1).numpy(), atol=1e-6)


def test_folding_a_folded_model_changes_nothing_and_from_onnx_reads_it(tmp_path):
    block = [layers.Conv2D(2, 1), layers.BatchNorm2D(), layers.BatchNorm2D()]
    model = randomize(xpcnn.Sequential([layers.Conv2D(2, 3), layers.BatchNorm2D(), layers.BatchNorm2D(),
                                        layers.Residual(block), layers.Flatten(), layers.Dense(3)]).build((1, 5, 5)),
                      np.random.default_rng(36))
    folded = model.fold_batchnorm()
    assert [type(layer).__name__ for layer in folded.layers] == ["Conv2D", "Residual", "Flatten", "Dense"]
    assert folded.fold_batchnorm().get_config() == folded.get_config()
    x = np.random.default_rng(37).standard_normal((4, 1, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(xpcnn.to_numpy(folded(x)), xpcnn.to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    check_parity(model, tmp_path / "m.onnx", np.random.default_rng(38))
    back = from_onnx(tmp_path / "m.onnx")
    assert np.array_equal(xpcnn.to_numpy(back.predict(x)), xpcnn.to_numpy(folded.predict(x)))


def test_onnx_model_refuses_an_empty_batch(tmp_path):
    from xpcnn.errors import DataError

    to_onnx(xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2)), tmp_path / "m.onnx")
    runtime = OnnxModel(tmp_path / "m.onnx")
    for call in (runtime.run, runtime.predict):
        with pytest.raises(DataError, match=r"x: the batch is empty"):
            call(np.zeros((0, 1, 2, 2), np.float32))


def test_fixed_batch_and_opset_13(tmp_path):
    model = randomize(zoo.get("default").build((1, 28, 28)), np.random.default_rng(11))
    to_onnx(model, tmp_path / "m.onnx", dynamic_batch=False, opset=13)
    proto = onnx.load(tmp_path / "m.onnx")
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1 and proto.opset_import[0].version == 13
    x = np.random.default_rng(12).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx").predict(x), xpcnn.to_numpy(model.predict(x)),
                               atol=PARITY)
    with pytest.raises(ArgumentError, match="opset"):
        to_onnx(model, tmp_path / "m.onnx", opset=18)
    with pytest.raises(ShapeError, match=r"expected shape \(N, 1, 28, 28\)"):
        OnnxModel(tmp_path / "m.onnx").predict(x[:, :, :5])


def test_a_layer_without_an_onnx_form_is_named_with_its_path(tmp_path):
    class Square(layers.Layer):
        def forward(self, x, training=False):
            return x * x

    model = xpcnn.Sequential([layers.Conv2D(2, 3), layers.Residual([Square()]), layers.Flatten()]).build((1, 6, 6))
    with pytest.raises(ExportError, match=r"layer 1\.block\.0 \(Square\): has no ONNX form"):
        to_onnx(model, tmp_path / "m.onnx")
    # the graph is of the folded model, where a BatchNorm2D after a Conv2D is gone: still the user's path
    folds = xpcnn.Sequential([layers.Conv2D(2, 3), layers.BatchNorm2D(), layers.Residual(
        [layers.Conv2D(2, 3, padding=1), layers.BatchNorm2D(), Square()]), layers.Flatten()]).build((1, 6, 6))
    with pytest.raises(ExportError, match=r"layer 2\.block\.2 \(Square\): has no ONNX form"):
        to_onnx(folds, tmp_path / "m.onnx")


def test_export_options_are_checked_and_the_runtime_takes_any_backends_arrays(tmp_path):
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), seed=0)
    for options in ({"opset": 13.0}, {"opset": True}, {"dynamic_batch": "no"}, {"opset": 13, "method": "trace"}):
        with pytest.raises(ArgumentError, match=f"^{next(iter(options))}: "):
            to_onnx(model, tmp_path / "m.onnx", **options)
    to_onnx(model, tmp_path / "m.onnx")
    runtime = OnnxModel(tmp_path / "m.onnx")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(xpcnn.errors.XpcnnError, match="batch_size: expected an int >= 1"):
            runtime.predict(np.zeros((2, 1, 2, 2), np.float32), batch_size=bad)
    strict = pytest.importorskip("array_api_strict")
    x = np.random.default_rng(0).random((5, 1, 2, 2), dtype=np.float32)
    np.testing.assert_allclose(runtime.predict(strict.asarray(x), batch_size=2), xpcnn.to_numpy(model.predict(x)),
                               atol=PARITY)


def test_a_model_on_the_ndonnx_backend_folds_and_exports(tmp_path):
    pytest.importorskip("ndonnx")
    model = xpcnn.Sequential([layers.Conv2D(2, 3), layers.BatchNorm2D(), layers.Flatten(), layers.Dense(3)])
    model = randomize(model.build((1, 5, 5), seed=0), np.random.default_rng(3))
    x = np.random.default_rng(4).random((3, 1, 5, 5), dtype=np.float32)
    expected = xpcnn.to_numpy(model.predict(x))
    model.to("ndonnx")
    to_onnx(model, tmp_path / "m.onnx")
    np.testing.assert_allclose(OnnxModel(tmp_path / "m.onnx").predict(x), expected, atol=PARITY)


def test_from_onnx_refuses_graphs_xpcnn_did_not_write(tmp_path):
    h = onnx.helper
    graph = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], name="conv"),
                          h.make_node("Reshape", ["y", "shape"], ["z"], name="flat")], "foreign",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 4, 4])],
                         [h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)],
                         [h.make_tensor("w", onnx.TensorProto.FLOAT, [1, 1, 3, 3], [1.0] * 9),
                          h.make_tensor("shape", onnx.TensorProto.INT64, [2], [0, -1])])
    onnx.save(h.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(ExportError, match=r"node 1 \(Reshape 'flat'\) is not one xpcnn wrote"):
        from_onnx(tmp_path / "foreign.onnx")
    model = zoo.get("default").build((1, 28, 28))
    proto = to_onnx(model, tmp_path / "m.onnx")
    proto.graph.node[2].op_type = "Relu6"  # a changed node after export
    onnx.save(proto, tmp_path / "changed.onnx")
    with pytest.raises(ExportError, match=r"node 2 \(Relu6 '2/MaxPool_2'\) differs"):
        from_onnx(tmp_path / "changed.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk" * 10)
    with pytest.raises(ModelFileError):
        from_onnx(tmp_path / "junk.onnx")


# ---------------------------------------------------------------- method="trace": xpcnn's own code through ndonnx


@pytest.mark.parametrize("name", ["default", "notebook", "resnet8"])
def test_zoo_network_traced_through_ndonnx_runs_the_same(name, tmp_path):
    pytest.importorskip("ndonnx")
    rng = np.random.default_rng(15)
    model = randomize(zoo.get(name).build((1, 28, 28), seed=2), rng)
    check_parity(model, tmp_path / "t.onnx", rng, method="trace")
    to_onnx(model, tmp_path / "h.onnx")
    x = rng.standard_normal((33, 1, 28, 28)).astype(np.float32)
    traced, hand = OnnxModel(tmp_path / "t.onnx").run(x), OnnxModel(tmp_path / "h.onnx").run(x)
    assert np.abs(traced - hand).max() <= PARITY * np.abs(hand).max()


def test_random_networks_without_untraceable_layers_trace_too(tmp_path):
    pytest.importorskip("ndonnx")
    untraceable = {"Conv2DTranspose", "RandomFlip", "RandomCrop", "RandomTranslation"}
    traced = 0
    for index in range(RANDOM_NETWORKS):
        tags = set()
        model = random_network(index, tags)
        if traced < 2 and not tags & untraceable and sum(1 for _ in model.walk()) <= 8:  # tracing takes seconds
            check_parity(model, tmp_path / "t.onnx", np.random.default_rng(index), method="trace",
                         output="probabilities" if traced % 2 else "logits")
            traced += 1
    assert traced == 2


def test_trace_names_the_layer_it_cannot_trace_and_from_onnx_refuses_traced_graphs(tmp_path):
    pytest.importorskip("ndonnx")
    model = xpcnn.Sequential([layers.Conv2D(2, 3), layers.Conv2DTranspose(2, 3, stride=2), layers.Flatten()])
    with pytest.raises(ExportError, match=r"layer 1 \(Conv2DTranspose\): cannot be traced through ndonnx"):
        to_onnx(model.build((1, 6, 6)), tmp_path / "m.onnx", method="trace")
    to_onnx(xpcnn.Sequential([layers.Flatten(), layers.Dense(2)]).build((1, 2, 2)), tmp_path / "t.onnx", method="trace")
    with pytest.raises(ExportError, match="method='trace'"):
        from_onnx(tmp_path / "t.onnx")


# ---------------------------------------------------------------- docs/deploy.md


def test_the_docs_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("ndonnx")
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    monkeypatch.chdir(tmp_path)
    exec(compile(re.search(r"```python\n(.*?)```", text, re.S).group(1), "docs/deploy.md", "exec"), {})


# ---------------------------------------------------------------- the command line


def test_cli_export_then_predict_with_the_onnx_file(tmp_path, capsys):
    image = pytest.importorskip("PIL.Image")
    model = randomize(zoo.get("default").build((1, 28, 28), seed=3), np.random.default_rng(13))
    model.save(tmp_path / "m.safetensors")
    assert cli.main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx")]) == 0
    assert "m.onnx: logits" in capsys.readouterr().out
    rng = np.random.default_rng(14)
    for i in range(4):
        image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    lines = {}
    for name in ("m.safetensors", "m.onnx"):
        assert cli.main(["predict", str(tmp_path / name), *paths]) == 0
        lines[name] = [line.split(" (probability ")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines["m.onnx"] == lines["m.safetensors"] and len(lines["m.onnx"]) == 4
    assert cli.main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "p.onnx"), "--output",
                     "probabilities"]) == 0
    assert OnnxModel(tmp_path / "p.onnx").output == "probabilities"

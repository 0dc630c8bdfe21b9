"""``xpcnn predict`` (--top) and ``xpcnn evaluate --data`` (per-class precision and recall,
confusion matrix, --plot) on a small generated image folder, and docs/images.md's examples."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import cli, layers
from xpcnn.datasets import image_folder
from xpcnn.datasets.folder import read_image

Image = pytest.importorskip("PIL.Image")
COLORS = {"blue": (0, 0, 200), "green": (0, 200, 0), "red": (200, 0, 0)}


def colour_folder(root, count=6, classes=COLORS):
    """One class per colour: noisy 10x12 RGB images, 3 channels, ``count`` per class."""
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(np.array(COLORS[name]) + rng.integers(-40, 40, (10, 12, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = colour_folder(tmp_path_factory.mktemp("images") / "colours")
    model = xpcnn.Sequential([layers.Conv2D(4, 3), layers.ReLU(), layers.Flatten(), layers.Dense(3)])
    model.fit(image_folder(root, image_size=(8, 8)), epochs=3, batch_size=6, verbose=0)
    path = root.parent / "m.safetensors"
    model.save(path)
    return root, path, model


def test_predict_prints_the_top_k_classes_of_files_and_folders(trained, capsys):
    root, path, model = trained
    assert cli.main(["predict", str(path), str(root / "red"), str(root / "blue" / "0.png"), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7
    probs = xpcnn.to_numpy(model.predict(read_image(root / "blue" / "0.png", "rgb", (8, 8))[None] / np.float32(255)))
    first, second = np.argsort(-probs[0])[:2]
    names = model.class_names
    assert lines[-1] == (f"{root / 'blue' / '0.png'}: {names[first]} (probability {probs[0, first]:.3f}); "
                         f"next: {names[second]} ({probs[0, second]:.3f})")
    assert cli.main(["predict", str(path), str(root / "red" / "1.png")]) == 0
    assert re.fullmatch(r".*1\.png: (red|green|blue) \(probability [0-9.]+\)\n", capsys.readouterr().out)
    assert cli.main(["predict", str(path), str(root / "red" / "1.png"), "--top", "9"]) == 0
    assert capsys.readouterr().out.count("(") == 3  # no more classes than the model has
    with pytest.raises(SystemExit, match="2"):
        cli.main(["predict", str(path), str(root), "--top", "0"])


def test_evaluate_on_a_folder_prints_precision_recall_and_the_confusion_matrix(trained, tmp_path, capsys):
    root, path, model = trained
    assert cli.main(["evaluate", str(path), "--data", str(root), "--plot", str(tmp_path / "cm.png")]) == 0
    out = capsys.readouterr().out
    ds = image_folder(root, image_size=(8, 8))
    result = model.evaluate(ds)
    assert f"accuracy {100 * result['accuracy']:.2f}% " in out and f"loss {result['loss']:.4f}" in out
    predicted = xpcnn.to_numpy(model.predict(ds)).argmax(axis=1)
    counts = np.zeros((3, 3), np.int64)
    np.add.at(counts, (ds.labels, predicted), 1)
    rows = out.split("predicted class):\n")[1].splitlines()[1:4]
    assert [[int(v) for v in row.split()[1:]] for row in rows] == counts.tolist()
    for k, name in enumerate(model.class_names):
        recall = f"{counts[k, k] / counts[k].sum():9.3f}"
        assert re.search(rf"^{name} .* {re.escape(recall.strip())}\s+6$", out, flags=re.M)
    assert Image.open(tmp_path / "cm.png").size[0] > 100


def test_evaluate_on_fewer_classes_renumbers_and_an_unknown_class_is_named(trained, tmp_path, capsys):
    _, path, _ = trained
    only_green = colour_folder(tmp_path / "green_only", count=3, classes=["green"])
    assert cli.main(["evaluate", str(path), "--data", str(only_green)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^green .* 3$", out, flags=re.M) and re.search(r"^red .* -\s+0$", out, flags=re.M)
    (only_green / "purple").mkdir()
    Image.new("RGB", (10, 12)).save(only_green / "purple" / "p.png")
    assert cli.main(["evaluate", str(path), "--data", str(only_green)]) == 1
    assert f"{only_green / 'purple'}: the class 'purple' is not one of the model's classes" in capsys.readouterr().err


def test_class_report_marks_undefined_ratios():
    table, counts = cli.class_report(np.array([0, 0, 1]), np.array([0, 0, 0]), ["a", "b", "c"])
    assert counts.tolist() == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert re.search(r"^a\s+0\.667\s+1\.000\s+2$", table, flags=re.M)
    assert re.search(r"^c\s+-\s+-\s+0$", table, flags=re.M)


def test_docs_images_examples_run(tmp_path, monkeypatch, capsys):
    """Every python block, and every ``xpcnn ...`` line of the bash blocks (through cli.main), in order."""
    pytest.importorskip("matplotlib")
    text = (Path(__file__).resolve().parents[1] / "docs" / "images.md").read_text()
    blocks = re.findall(r"```(python|bash)\n(.*?)```", text, flags=re.S)
    assert [kind for kind, _ in blocks] == ["python", "bash", "bash", "bash", "python"]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for kind, block in blocks:
        if kind == "python":
            exec(compile(block, "docs/images.md", "exec"), namespace)
        else:
            assert cli.main(shlex.split(block)[1:]) == 0, block
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "test accuracy" in out and "confusion matrix" in out
    assert (tmp_path / "confusion.png").exists() and "new.png: circle (probability" in out


def test_predict_reads_colour_images_for_an_rgb_model_without_class_names(tmp_path, capsys):
    root = colour_folder(tmp_path / "colours")
    model = xpcnn.Sequential([layers.Conv2D(4, 3), layers.ReLU(), layers.Flatten(), layers.Dense(3)])
    model.build((3, 8, 8), seed=0)  # trained on arrays or not at all: no class names
    assert model.class_names is None
    path = tmp_path / "rgb.safetensors"
    model.save(path)
    assert cli.main(["predict", str(path), str(root / "red" / "1.png")]) == 0
    probs = xpcnn.to_numpy(model.predict(read_image(root / "red" / "1.png", "rgb", (8, 8))[None] / np.float32(255)))
    assert capsys.readouterr().out.startswith(f"{root / 'red' / '1.png'}: {int(probs.argmax())} (probability ")


def test_predict_skips_hidden_files_and_folders_as_image_folder_does(trained, tmp_path, capsys):
    root, path, _ = trained
    folder = tmp_path / "red"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_bytes((root / "red" / f"{i}.png").read_bytes())
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble stub")
    (folder / ".thumbnails").mkdir()
    (folder / ".thumbnails" / "0.png").write_bytes(b"not read")
    assert cli.main(["predict", str(path), str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(folder / "0.png"), str(folder / "1.png")]


def test_predict_reads_a_dark_digit_on_a_transparent_background(tmp_path):
    pixels = np.zeros((28, 28, 4), np.uint8)
    pixels[..., :3] = 255  # white, fully transparent background
    pixels[8:20, 12:16] = (0, 0, 0, 255)  # an opaque black stroke
    Image.fromarray(pixels, "RGBA").save(tmp_path / "digit.png")
    for invert, (stroke, background) in (("auto", (255, 0)), ("no", (0, 255)), ("yes", (255, 0))):
        gray = cli.read_image(tmp_path / "digit.png", (1, 28, 28), invert)[0]
        assert (gray[14, 14], gray[0, 0]) == (stroke, background), invert

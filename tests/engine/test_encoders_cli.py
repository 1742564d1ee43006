"""Class encoders through the CLI: train / eval / predict / export, label-set swap, embed-class-names, errors."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from esseg.cli import main
from esseg.data.glyph_scenes import GlyphScenes
from esseg.models.class_encoders import write_class_list

from cli_checks import run_error
from engine_tiny import NUM_CLASSES, tiny_args


def _glyphs():
    return GlyphScenes(num_classes=NUM_CLASSES, size=32, length=6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per encoder: {"attributes": dir, "text": dir, "table": dir}, plus the text features."""
    root = tmp_path_factory.mktemp("encoders")
    feats = root / "names.npy"
    np.save(feats, np.random.default_rng(0).normal(size=(NUM_CLASSES, 5)).astype(np.float32))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {"features": feats}
    try:
        for name, extra in (("attributes", ["model.class_encoder=attributes"]),
                            ("text", ["model.class_encoder=text", f"model.text_features={feats}"]),
                            ("table", [])):
            out[name] = root / name
            assert main(["train", *tiny_args(out[name]), *(["--set", *extra] if extra else [])]) == 0
    finally:
        torch.set_num_threads(before)
    return out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["attributes", "text"])
def test_train_eval_predict_export_with_an_encoder(runs, name, tmp_path, capsys):
    run = runs[name]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["model_config"]["class_encoder"] == name
    assert any(k.startswith("class_encoder.") for k in ckpt["model"]) and "class_table" not in ckpt["model"]
    if name == "attributes":
        assert ckpt["model_config"]["class_encoder_options"]["class_attributes"] == _glyphs().class_attributes
    else:
        np.testing.assert_array_equal(ckpt["model"]["class_encoder.text_features"].numpy(), np.load(runs["features"]))
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--json", str(tmp_path / "m.json"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads((run / "eval_val.json").read_text())
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(run / "last.pt"), str(tmp_path / "a.png"), "--out", str(tmp_path / "p"),
                 "--device", "cpu"]) == 0
    assert (tmp_path / "p" / "a_label.png").is_file()
    assert main(["export-embeddings", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "e")]) == 0
    from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(run / "last.pt"))
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "e" / "class_embeddings.pt", weights_only=True), model.class_embeddings())
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "m.ts"), "--size", "32"]) == 0
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    images = torch.randn(1, 3, 32, 32)
    assert torch.equal(scripted(images), model.predict(images))


def test_eval_and_predict_with_the_training_class_list_equal_the_normal_run(runs, tmp_path, capsys):
    ds = _glyphs()
    tsv = write_class_list(tmp_path / "classes.tsv", ds.class_attributes, list(ds.classes))
    run = runs["attributes"]
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--classes", str(tsv), "--json", str(tmp_path / "s.json"),
                 "--device", "cpu"]) == 0
    swapped = json.loads((tmp_path / "s.json").read_text())
    normal = json.loads((run / "eval_val.json").read_text())
    assert swapped["IoU"] == normal["IoU"] and swapped["class_names"] == normal["class_names"]
    # text: the training features (names from the .txt of the same stem)
    feats = tmp_path / "names.npy"
    np.save(feats, np.load(runs["features"]))
    (tmp_path / "names.txt").write_text("".join(f"n{c}\n" for c in range(NUM_CLASSES)))
    assert main(["eval", "--checkpoint", str(runs["text"] / "last.pt"), "--classes", str(feats), "--json",
                 str(tmp_path / "t.json"), "--device", "cpu"]) == 0
    text = json.loads((tmp_path / "t.json").read_text())
    assert text["IoU"] == json.loads((runs["text"] / "eval_val.json").read_text())["IoU"]
    assert text["class_names"] == [f"n{c}" for c in range(NUM_CLASSES)]
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    for out, extra in (("p1", []), ("p2", ["--classes", str(tsv)])):
        assert main(["predict", "--checkpoint", str(run / "last.pt"), str(image), "--out", str(tmp_path / out),
                     "--device", "cpu", *extra]) == 0
    a, b = (np.asarray(Image.open(tmp_path / p / "a_label.png")) for p in ("p1", "p2"))
    assert np.array_equal(a, b)


def test_predict_over_a_smaller_class_list_uses_its_ids(runs, tmp_path, capsys):
    ds = _glyphs()
    keep = [0, 1, 5]
    tsv = write_class_list(tmp_path / "few.tsv", [ds.class_attributes[c] for c in keep])
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(runs["attributes"] / "last.pt"), str(image), "--out", str(tmp_path / "p"),
                 "--device", "cpu", "--classes", str(tsv)]) == 0
    assert set(np.unique(np.asarray(Image.open(tmp_path / "p" / "a_label.png"))).tolist()) <= {0, 1, 2}


def test_resume_with_an_encoder_is_exact(tmp_path, capsys):
    args = ["--set", "model.class_encoder=attributes"]
    assert main(["train", *tiny_args(tmp_path / "full"), *args]) == 0
    assert main(["train", *tiny_args(tmp_path / "half"), *args, "train.stop_at=1"]) == 0
    assert main(["train", *tiny_args(tmp_path / "half"), *args, "--resume", "auto"]) == 0
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------- errors


def test_classes_for_a_table_model_is_one_line(runs, tmp_path, capsys):
    tsv = write_class_list(tmp_path / "c.tsv", _glyphs().class_attributes)
    line = run_error(capsys, ["eval", "--checkpoint", str(runs["table"] / "last.pt"), "--classes", str(tsv), "--device", "cpu"])
    assert "cannot embed new classes" in line
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    line = run_error(capsys, ["predict", "--checkpoint", str(runs["table"] / "last.pt"), str(tmp_path / "a.png"), "--out",
                              str(tmp_path / "o"), "--classes", str(tsv), "--device", "cpu"])
    assert "cannot embed new classes" in line and not (tmp_path / "o").exists()


def test_unknown_token_at_test_time_names_it(runs, tmp_path, capsys):
    attrs = _glyphs().class_attributes
    attrs[3] = ["shape:U+25A0", "pattern:solid", "colour:ultraviolet"]
    tsv = write_class_list(tmp_path / "c.tsv", attrs)
    line = run_error(capsys, ["eval", "--checkpoint", str(runs["attributes"] / "last.pt"), "--classes", str(tsv),
                              "--device", "cpu"])
    assert "'colour:ultraviolet'" in line and "class 3" in line


def test_class_list_length_must_match_the_eval_dataset(runs, tmp_path, capsys):
    tsv = write_class_list(tmp_path / "c.tsv", _glyphs().class_attributes[:5])
    line = run_error(capsys, ["eval", "--checkpoint", str(runs["attributes"] / "last.pt"), "--classes", str(tsv),
                              "--device", "cpu"])
    assert "lists 5 classes" in line


def test_text_features_with_the_wrong_row_count(tmp_path, capsys):
    np.save(tmp_path / "f.npy", np.zeros((NUM_CLASSES + 1, 4), np.float32))
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "r"), "--set", "model.class_encoder=text",
                              f"model.text_features={tmp_path / 'f.npy'}"])
    assert f"has {NUM_CLASSES + 1} rows but the model has C={NUM_CLASSES}" in line
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "r"), "--set", "model.class_encoder=text"])
    assert "model.text_features" in line


def test_class_attributes_tsv_missing_a_class(tmp_path, capsys):
    attrs = _glyphs().class_attributes
    tsv = tmp_path / "c.tsv"
    tsv.write_text("".join(f"{c}\t{' '.join(a)}\n" for c, a in enumerate(attrs) if c != 4))
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "r"), "--set", "model.class_encoder=attributes",
                              f"model.class_attributes={tsv}"])
    assert "no attribute tokens for class 4" in line


def test_attributes_for_a_dataset_without_descriptions(tmp_path, capsys):
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "r"), "--set", "model.class_encoder=attributes",
                              "model.method=baseline"])
    assert "needs model.method=ess" in line


# -------------------------------------------------------------------------- embed-class-names


def test_embed_class_names_with_a_plugin_encoder(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny_text.py").write_text(
        "import numpy as np\n"
        "def embed(names):\n"
        "    return np.array([[len(n), n.count('a'), 1.0] for n in names], np.float32)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "names.txt").write_text("cat\nbanana\nsky\n")
    for suffix in (".npy", ".pt"):
        out = tmp_path / f"f{suffix}"
        assert main(["embed-class-names", "--classes", str(tmp_path / "names.txt"), "--out", str(out),
                     "--model", "tiny_text:embed"]) == 0
        feats = np.load(out) if suffix == ".npy" else torch.load(out, weights_only=True).numpy()
        np.testing.assert_array_equal(feats, [[3, 1, 1], [6, 3, 1], [3, 0, 1]])
    sys.modules.pop("tiny_text", None)


def test_embed_class_names_without_a_text_encoder_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    (tmp_path / "names.txt").write_text("cat\n")
    line = run_error(capsys, ["embed-class-names", "--classes", str(tmp_path / "names.txt"), "--out", str(tmp_path / "f.npy")])
    assert "pip install sentence-transformers" in line
    line = run_error(capsys, ["embed-class-names", "--classes", str(tmp_path / "names.txt"), "--out", str(tmp_path / "f.npy"),
                              "--model", "no_such_module_xyz:embed"])
    assert "no_such_module_xyz" in line
    assert not (tmp_path / "f.npy").exists()


def test_train_step_over_the_training_classes_only():
    """Held-out classes are not in the loss at all: no gradient reaches their rows; the loss is the subset's."""
    from torch import nn

    from esseg import ESSLoss
    from esseg.engine.train import train_step
    from esseg.models import EmbeddingSegmenter

    torch.manual_seed(0)
    model = EmbeddingSegmenter(nn.Conv2d(3, 4, 1), 6, 4)
    keep = torch.tensor([0, 1, 3, 4, 5])
    labels = keep[torch.randint(0, 5, (2, 8, 8))]
    labels[0, 0, 0] = 255
    images = torch.randn(2, 3, 8, 8)
    criterion = ESSLoss(k=3, query_stride=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    values = train_step(model, criterion, optimizer, scaler, iter([(images, labels)]), torch.device("cpu"), train_classes=keep)
    assert model.class_table.grad[2].abs().sum() == 0 and model.class_table.grad[keep].abs().sum() > 0
    renumbered = torch.where(labels == 255, labels, torch.searchsorted(keep, labels))
    expected = criterion(model(images), renumbered, model.class_embeddings()[keep])
    assert values["loss"] == pytest.approx(float(expected.detach()), rel=1e-5)

"""Label maps of more than 65535 classes: 32-bit TIFF output."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from esseg.cli import main
from esseg.data.glyph_scenes import GlyphScenes
from esseg.engine.predict import label_image, label_suffix


def test_label_maps_above_65535_classes_are_32_bit_tiffs(tmp_path):
    label = np.array([[0, 65535], [65536, 999_999]], dtype=np.int64)
    assert label_suffix(65535) == ".png" and label_suffix(65536) == ".tif"
    path = tmp_path / f"x_label{label_suffix(1_000_000)}"
    label_image(label, 1_000_000).save(path)
    assert np.array_equal(np.asarray(Image.open(path)), label)
    small = tmp_path / "y.png"
    label_image(label % 65536, 65535).save(small)
    assert np.asarray(Image.open(small)).max() == 65535



@pytest.mark.slow
def test_train_eval_predict_beyond_65535_classes_with_defaults(tmp_path, capsys):
    """C = 100,000 through the CLI with the library's defaults: the kNN index (auto backend), the
    ignore value 2**31-1, evaluation without a C x C matrix, 32-bit label maps from predict."""
    c, out = 100_000, tmp_path / "run"
    args = ["--set", f"data.options={{num_classes: {c}, size: 32, length: 4}}", "data.val_options={length: 2}",
            "model.embedding_dim=4", "train.eval_batch_size=2", "train.num_vis=0", "train.tensorboard=false",
            "--iters", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    assert main(["train", *args]) == 0
    assert f"kNN search: ivf (loss.backend=auto, C={c}" in capsys.readouterr().out
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["ignore_index"] == 2**31 - 1
    assert ckpt["criterion"]["_extra_state"]["index"] is not None  # the training index's partition is saved
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", str(tmp_path / "eval.json")]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    val = GlyphScenes(None, "val", num_classes=c, size=32, length=2)
    labels = np.stack([val.load(i)[1] for i in range(2)])
    assert len(metrics["IoU"]) == c and metrics["num_pixels"] == int((labels != val.ignore_index).sum())
    assert sum(metrics["gt_pixels"]) == metrics["num_pixels"] and max(np.flatnonzero(metrics["gt_pixels"])) > 65535
    image = tmp_path / "scene.png"
    val.load(0)[0].save(image)
    assert main(["predict", "--checkpoint", str(out / "last.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    label = np.asarray(Image.open(tmp_path / "pred" / "scene_label.tif"))
    assert label.dtype == np.int32 and label.shape == (32, 32) and 0 <= label.min() and label.max() < c

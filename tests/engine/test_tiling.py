"""Sliding-window prediction (`predict --tile`, `eval --tile`) against a brute-force oracle."""

import numpy as np
import pytest
import torch
from PIL import Image

from esseg import create_model
from esseg.cli import main
from esseg.engine.evaluate import predict_batch, predict_tiled


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("deeplabv3plus", "mobilenet_v2", 5, embedding_dim=4).eval()


def _oracle(model, images, tile, overlap):
    """Every crop predicted on its own; each pixel from the crop whose centre is nearest (first on ties)."""
    h, w = images.shape[-2:]
    stride = tile - round(overlap * tile)

    def starts(size):
        s = 0
        out = []
        while True:
            if s + tile >= size:
                out.append(max(size - tile, 0))
                return out
            out.append(s)
            s += stride

    crops = []
    for y0 in starts(h):
        for x0 in starts(w):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            crops.append((y0, y1, x0, x1, predict_batch(model, images[..., y0:y1, x0:x1])))
    expected = torch.empty((images.shape[0], h, w), dtype=torch.long)
    for y in range(h):
        for x in range(w):
            best = None
            for y0, y1, x0, x1, pred in crops:
                if y0 <= y < y1 and x0 <= x < x1:
                    d = (y - (y0 + y1 - 1) / 2) ** 2 + (x - (x0 + x1 - 1) / 2) ** 2
                    if best is None or d < best[0]:
                        best = (d, pred[:, y - y0, x - x0])
            expected[:, y, x] = best[1]
    return expected, len(crops)


@pytest.mark.parametrize("size, tile, overlap", [((70, 90), 32, 0.25), ((40, 100), 48, 0.5), ((33, 64), 32, 0.0)])
def test_tiled_prediction_equals_the_oracle(model, size, tile, overlap):
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    expected, crops = _oracle(model, images, tile, overlap)
    assert crops > 1
    assert torch.equal(predict_tiled(model, images, tile, overlap), expected)


def test_one_tile_covering_the_image_is_whole_image_prediction(model):
    images = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    assert torch.equal(predict_tiled(model, images, 64), predict_batch(model, images))
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\)"):
        predict_tiled(model, images, 32, overlap=1.0)


def test_predict_and_eval_accept_tile(trained_run, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(image)
    ckpt = str(trained_run / "last.pt")
    assert main(["predict", "--checkpoint", ckpt, str(image), "--out", str(tmp_path / "p"), "--tile", "32", "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "p/in_label.png").size == (80, 48)
    # glyph scenes of 32 x 32: a 32-pixel tile is the whole image, so the metrics are those of plain eval
    assert main(["eval", "--checkpoint", ckpt, "--json", str(tmp_path / "t.json"), "--tile", "32", "--device", "cpu"]) == 0
    assert main(["eval", "--checkpoint", ckpt, "--json", str(tmp_path / "w.json"), "--device", "cpu"]) == 0
    assert (tmp_path / "t.json").read_text() == (tmp_path / "w.json").read_text()
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", ckpt, str(image), "--out", str(tmp_path / "p"), "--tile", "32", "--overlap", "1"])
    assert "--overlap: must be in [0, 1), got 1" in capsys.readouterr().err

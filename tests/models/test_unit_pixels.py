"""``unit_pixels=False``: unit class embeddings, pixel embeddings keep their length (a per-pixel scale)."""

import pytest
import torch
import torch.nn.functional as F

from esseg import create_model
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from esseg.errors import ConfigError
from esseg.losses.exact_ce import exact_cross_entropy


def _model(**kw):
    torch.manual_seed(0)
    return create_model(arch="fpn", encoder="resnet18", num_classes=7, embedding_dim=5, **kw)


def test_only_the_class_table_is_normalised():
    model = _model(unit_pixels=False).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    norms = out.norm(dim=1)
    assert (norms - 1).abs().max() > 0.05  # pixels keep their length
    torch.testing.assert_close(model.class_embeddings().norm(dim=1), torch.ones(7))
    raw = F.interpolate(model.net(x), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, raw)  # nothing but the upsampling
    # same weights with unit pixels: the same directions, unit length
    unit = _model().eval()
    unit.load_state_dict(model.state_dict())
    torch.testing.assert_close(unit(x), F.normalize(out, dim=1))


def test_loss_is_a_cosine_classifier_with_a_per_pixel_scale():
    # oracle: softmax over 2 r cos(x, mu) / tau (the -r^2 - 1 of the squared distance cancels)
    model = _model(unit_pixels=False)
    x, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 7, (2, 32, 32))
    out, table, tau = model(x), model.class_embeddings(), 0.3
    loss = exact_cross_entropy(out, labels, table, tau=tau)
    pixels = out.permute(0, 2, 3, 1).reshape(-1, 5)
    r = pixels.norm(dim=1, keepdim=True)
    logits = 2 * r * (F.normalize(pixels, dim=1) @ table.t()) / tau
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels.reshape(-1)), rtol=1e-4, atol=1e-5)


def test_prediction_is_the_class_of_largest_cosine():
    model = _model(unit_pixels=False).eval()
    x = torch.randn(1, 3, 64, 64)
    cos = torch.einsum("bdhw,cd->bchw", F.normalize(model(x), dim=1), model.class_embeddings())
    assert torch.equal(model.predict(x), cos.argmax(1))


def test_option_is_checked_and_survives_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="needs normalize=True"):
        _model(unit_pixels=False, normalize=False)
    with pytest.raises(ConfigError, match="need an ESS model"):
        create_model(num_classes=7, unit_pixels=False)
    assert "unit_pixels" not in _model().config  # old configs compare equal
    model = _model(unit_pixels=False)
    path = save_checkpoint({"model": model.state_dict(), "model_config": dict(model.config)}, tmp_path / "m.pt")
    again = model_from_checkpoint(load_checkpoint(path), path).eval()
    assert again.unit_pixels is False
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(again(x), model.eval()(x))


def test_the_config_key_reaches_the_engine_model():
    from esseg.engine.config import config_from_dict
    from esseg.engine.train import build_model

    cfg = config_from_dict({"model": {"unit_pixels": False, "embedding_dim": 5}})
    model = build_model(cfg, num_classes=7)
    assert model.unit_pixels is False and model.config["unit_pixels"] is False
    assert build_model(config_from_dict({"model": {"embedding_dim": 5}}), num_classes=7).unit_pixels is True
    # ignored by the baseline, like embedding_dim (an ESS recipe switched to --method baseline)
    baseline = build_model(config_from_dict({"model": {"unit_pixels": False, "method": "baseline"}}), num_classes=7)
    assert not baseline.is_embedding


def test_max_pixel_length_caps_lengths_and_keeps_directions(tmp_path):
    free = _model(unit_pixels=False).eval()
    x = torch.randn(2, 3, 32, 32)
    raw = free(x)
    r = raw.norm(dim=1, keepdim=True)
    cap = float(r.median())  # about half the pixels above it
    capped = _model(unit_pixels=False, max_pixel_length=cap).eval()
    capped.load_state_dict(free.state_dict())
    out = capped(x)
    # oracle: x * min(1, R / ||x||), written out per pixel
    torch.testing.assert_close(out, torch.where(r > cap, raw / r * cap, raw))
    assert float(out.norm(dim=1).max()) <= cap * (1 + 1e-5)
    torch.testing.assert_close(F.normalize(out, dim=1), F.normalize(raw, dim=1))
    # kept in checkpoints; refused where pixel lengths are not free
    path = save_checkpoint({"model": capped.state_dict(), "model_config": dict(capped.config)}, tmp_path / "m.pt")
    again = model_from_checkpoint(load_checkpoint(path), path).eval()
    assert again.max_pixel_length == cap
    torch.testing.assert_close(again(x), out)
    for kw in ({"max_pixel_length": 5.0}, {"unit_pixels": False, "max_pixel_length": 0.0}):
        with pytest.raises(ConfigError, match="max_pixel_length"):
            _model(**kw)


def test_max_pixel_length_config_key():
    from esseg.engine.config import config_from_dict
    from esseg.engine.train import build_model
    from esseg.errors import ConfigError as CE

    cfg = config_from_dict({"model": {"unit_pixels": False, "embedding_dim": 5, "max_pixel_length": 40}})
    assert build_model(cfg, num_classes=7).max_pixel_length == 40
    with pytest.raises(CE, match=r"model\.max_pixel_length=40(\.0)? caps free pixel lengths.*clear it: model\.max_pixel_length=null"):
        config_from_dict({"model": {"max_pixel_length": 40}})
    # a recipe with the cap switched to no normalisation: the error names every key to change
    with pytest.raises(CE, match=r"also set model\.unit_pixels=true and model\.max_pixel_length=null"):
        config_from_dict({"model": {"unit_pixels": False, "max_pixel_length": 40, "normalize": False}})

"""create_model / EmbeddingSegmenter / BaselineSegmenter: shapes, unit norms, predict, groups."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esseg import BaselineSegmenter, EmbeddingSegmenter, ESSLoss, create_model, nearest_class
from esseg.errors import EssegError


class TinyNet(nn.Module):
    """A hand-made conv net with an 'encoder' attribute and output at 1/2 resolution."""

    def __init__(self, out_channels):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, out_channels, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "resnet50"])
@pytest.mark.parametrize("embedding_dim", [12, None])
def test_create_model_forward_backward(encoder, embedding_dim):
    torch.manual_seed(0)
    c = 40
    model = create_model("deeplabv3plus", encoder, num_classes=c, embedding_dim=embedding_dim)
    assert model.is_embedding == (embedding_dim is not None)
    images = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, c, (2, 64, 96))
    out = model(images)
    if embedding_dim:
        assert out.shape == (2, embedding_dim, 64, 96)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 64, 96))
        assert model.class_embeddings().shape == (c, embedding_dim)
        loss = ESSLoss(k=5)(out, labels, model.class_embeddings())
    else:
        assert out.shape == (2, c, 64, 96)
        loss = F.cross_entropy(out, labels)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    pred = model.predict(images)
    assert pred.shape == (2, 64, 96) and pred.dtype == torch.int64
    assert pred.min() >= 0 and pred.max() < c
    top = model.predict_topk(images, 3)
    assert top.shape == (2, 3, 64, 96) and torch.equal(top[:, 0], pred)


def test_deeplab_uses_paper_settings():
    model = create_model(num_classes=5, embedding_dim=6)
    aspp = [m for m in model.net.decoder.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1]
    assert sorted({m.dilation[0] for m in aspp}) == [12, 24, 36]
    assert model.config["output_stride"] == 16 and model.config["embedding_dim"] == 6
    rebuilt = create_model(**model.config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_embedding_segmenter_wraps_any_net_and_normalises_after_upsampling():
    torch.manual_seed(1)
    model = EmbeddingSegmenter(TinyNet(4), num_classes=9, embedding_dim=4)
    images = torch.randn(3, 3, 15, 17)  # odd size: the net outputs 8x9
    emb = model(images)
    assert emb.shape == (3, 4, 15, 17)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3, 15, 17))
    # predict == nearest class by brute force
    ref = torch.cdist(emb.permute(0, 2, 3, 1).reshape(-1, 4), model.class_embeddings()).argmin(1).view(3, 15, 17)
    assert torch.equal(model.predict(images), ref)
    groups = model.param_groups()
    assert len(groups["backbone"]) == 4 and len(groups["head"]) == 2 and groups["class_embeddings"] == [model.class_table]


def test_unnormalised_variant():
    model = EmbeddingSegmenter(TinyNet(3), num_classes=5, embedding_dim=3, normalize=False)
    with torch.no_grad():
        model.class_table.mul_(7)
    assert model.class_embeddings().norm(dim=1).min() > 1.5
    assert not torch.allclose(model(torch.randn(1, 3, 8, 8)).norm(dim=1), torch.ones(1, 8, 8))


def test_baseline_segmenter_wraps_any_net():
    model = BaselineSegmenter(TinyNet(6), num_classes=6)
    images = torch.randn(2, 3, 10, 10)
    logits = model(images)
    assert logits.shape == (2, 6, 10, 10)
    assert torch.equal(model.predict(images), logits.argmax(1))


def test_nearest_class_chunks_equal_brute_force():
    g = torch.Generator().manual_seed(2)
    x, mu = torch.randn(1000, 5, generator=g), torch.randn(77, 5, generator=g)
    ref = torch.cdist(x, mu).argmin(1)
    assert torch.equal(nearest_class(x, mu), ref)
    assert torch.equal(nearest_class(x, mu, chunk_size=37), ref)


def test_wrong_channels_and_bad_names():
    model = EmbeddingSegmenter(TinyNet(5), num_classes=4, embedding_dim=3)
    with pytest.raises(ValueError, match="expected embedding_dim=3"):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(EssegError, match="unknown arch 'deeplabv9'; known architectures: .*deeplabv3plus"):
        create_model("deeplabv9", num_classes=4)
    with pytest.raises(EssegError, match="unknown encoder 'resnet5000'"):
        create_model(encoder="resnet5000", num_classes=4)


def test_non_finite_embeddings_or_logits_raise_a_clear_error():
    from esseg.errors import NonFiniteError

    g = torch.Generator().manual_seed(3)
    x, mu = torch.randn(50, 4, generator=g), torch.randn(20, 4, generator=g)  # C = 20: padded search
    nan_x, nan_mu = x.clone(), mu.clone()
    nan_x[7, 1], nan_mu[2] = float("nan"), float("inf")
    with pytest.raises(NonFiniteError, match=r"pixel embeddings hold NaN or inf \(1 of 200 values\)"):
        nearest_class(nan_x, mu, chunk_size=16)
    with pytest.raises(NonFiniteError, match="class embeddings hold NaN or inf .* use an earlier checkpoint"):
        nearest_class(x, nan_mu)
    assert isinstance(NonFiniteError("x"), EssegError)
    ess, base = EmbeddingSegmenter(TinyNet(4), 20, 4), BaselineSegmenter(TinyNet(20), 20)
    images = torch.randn(1, 3, 8, 8, generator=g)
    for model in (ess, base):
        model.eval()
        assert model.predict(images).shape == (1, 8, 8)
        with torch.no_grad():
            model.net.head.weight.fill_(float("nan"))
        with pytest.raises(NonFiniteError, match="not finite"):
            model.predict(images)
        with pytest.raises(NonFiniteError):
            model.predict_topk(images, k=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unit_rows_equals_f_normalize_in_value_and_gradient(monkeypatch, dtype):
    import esseg.models.segmenter as segmenter

    monkeypatch.setattr(segmenter, "UNIT_ROWS_CHUNK", 6)  # several chunks, a ragged last one
    g = torch.Generator().manual_seed(0)
    x = torch.randn(29, 5, generator=g, dtype=dtype) * 3
    x[4] = 0.0  # a zero row: its norm is clamped at eps
    x.requires_grad_()
    upstream = torch.randn(29, 5, generator=g, dtype=dtype)
    y = segmenter.unit_rows(x)
    ref = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(torch.autograd.grad((y * upstream).sum(), x)[0],
                               torch.autograd.grad((ref * upstream).sum(), x)[0])
    nonzero = x.detach()[[0, 1, 2]].clone().requires_grad_()
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(segmenter.unit_rows, (nonzero,))


def test_unit_rows_along_channels_of_pixel_embeddings(monkeypatch):
    import esseg.models.segmenter as segmenter

    monkeypatch.setattr(segmenter, "UNIT_ROWS_CHUNK", 10)  # rows of the chunked backward: 2 images at a time
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 2, 3, generator=g, dtype=torch.float64)
    x[1, :, 0, 0] = 0.0  # a zero pixel embedding
    x.requires_grad_()
    upstream = torch.randn(5, 3, 2, 3, generator=g, dtype=torch.float64)
    y = segmenter.unit_rows(x)
    ref = F.normalize(x, dim=1)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(torch.autograd.grad((y * upstream).sum(), x)[0],
                               torch.autograd.grad((ref * upstream).sum(), x)[0])
    assert torch.autograd.gradcheck(segmenter.unit_rows, (torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True),))

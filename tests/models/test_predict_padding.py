"""One prediction path: the model's predict pads to the network's input multiple, classifies, crops back."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esseg import EmbeddingSegmenter, create_model
from esseg.engine.evaluate import predict_batch
from esseg.models.segmenter import input_multiple


def _padded_oracle(model, images, multiple, k=1):
    """Pad by hand, run forward, classify by brute force (ESS: squared distances; baseline: logits), crop."""
    h, w = images.shape[-2:]
    out = model(F.pad(images, (0, -w % multiple, 0, -h % multiple)))
    if model.is_embedding:
        x = out.permute(0, 2, 3, 1)
        scores = -((x[..., None, :] - model.class_embeddings()) ** 2).sum(-1)  # (B, H', W', C)
    else:
        scores = out.permute(0, 2, 3, 1)
    top = scores.topk(k, dim=-1).indices.permute(0, 3, 1, 2)[:, :, :h, :w]
    return top[:, 0] if k == 1 else top


@pytest.mark.parametrize("arch, output_stride, embedding_dim, multiple", [
    ("deeplabv3plus", 16, 4, 16),
    ("deeplabv3plus", 8, None, 8),
    ("fpn", 16, 4, 32),
])
def test_predict_on_odd_sizes_equals_manual_padding_cropped_back(arch, output_stride, embedding_dim, multiple):
    torch.manual_seed(0)
    model = create_model(arch, "mobilenet_v2", 6, embedding_dim=embedding_dim, output_stride=output_stride).eval()
    assert model.input_multiple == multiple
    images = torch.randn(2, 3, 37, 50)
    with pytest.raises(RuntimeError, match="divisible"):  # the network itself refuses this size
        model(images)
    with torch.no_grad():
        pred = model.predict(images)
        assert pred.shape == (2, 37, 50) and pred.dtype == torch.int64
        assert torch.equal(pred, _padded_oracle(model, images, multiple))
        assert torch.equal(model.predict_topk(images, 3), _padded_oracle(model, images, multiple, k=3))
        # a size that needs no padding is predicted as is
        even = images[..., : 37 // multiple * multiple, : 50 // multiple * multiple]
        assert torch.equal(model.predict(even), _padded_oracle(model, even, 1))


def test_engine_prediction_wraps_the_models_predict():
    torch.manual_seed(0)
    model = create_model("deeplabv3plus", "mobilenet_v2", 5, embedding_dim=4).eval()
    images = torch.randn(1, 3, 21, 45)
    assert torch.equal(predict_batch(model, images), model.predict(images))


def test_networks_that_take_any_size_are_not_padded():
    net = nn.Conv2d(3, 4, 3, padding=1)
    model = EmbeddingSegmenter(net, num_classes=5, embedding_dim=4).eval()
    assert input_multiple(net) == 1 and model.input_multiple == 1
    images = torch.randn(1, 3, 7, 9)
    assert torch.equal(model.predict(images), _padded_oracle(model, images, 1))
    unet = create_model("unet", "mobilenet_v2", 5, embedding_dim=4).eval()  # smp's U-Net pads by itself
    assert unet.input_multiple == 1

"""Class encoders: exact oracles, gradients, label-set swap, caching, chunking and bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from esseg import ESSLoss, create_model
from esseg.errors import ConfigError
from esseg.models import EmbeddingSegmenter
from esseg.models.class_encoders import (
    AttributeEncoder, TextEncoder, build_class_encoder, load_class_list, read_class_list, write_class_list,
)

ATTRS = [["shape:a", "colour:red"], ["shape:b", "colour:red"], ["shape:a", "colour:blue"], ["shape:b", "colour:blue"],
         ["stuff:sky"]]


class TinyNet(nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, out_channels, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def _segmenter(encoder, normalize=True, d=6):
    torch.manual_seed(0)
    return EmbeddingSegmenter(TinyNet(d), encoder.num_classes if encoder else 5, d, normalize=normalize, class_encoder=encoder)


def test_identity_like_attribute_encoder_reproduces_a_table_exactly():
    table = torch.randn(5, 6)
    enc = AttributeEncoder(5, 6, [[f"class:{c}"] for c in range(5)], layers=0)
    with torch.no_grad():
        enc.token_embeddings[:5] = table[[enc.vocab.index(f"class:{c}") for c in range(5)]]
    assert torch.equal(enc(), table)
    model = _segmenter(enc, normalize=False)
    assert torch.equal(model.class_embeddings(), table)


def test_identity_like_text_encoder_reproduces_a_table_exactly():
    table = torch.randn(5, 6)
    enc = TextEncoder(5, 6, table.clone(), residual=False)
    with torch.no_grad():
        enc.projection[0].weight.copy_(torch.eye(6))
        enc.projection[0].bias.zero_()
    assert torch.equal(enc(), table)


def test_attribute_mean_and_sum_equal_a_loop_over_tokens():
    for reduce in ("mean", "sum"):
        enc = AttributeEncoder(5, 6, ATTRS, reduce=reduce, residual=False)
        with torch.no_grad():
            expect = []
            for tokens in ATTRS:
                rows = torch.stack([enc.token_embeddings[enc.vocab.index(t)] for t in tokens])
                expect.append(enc.mlp(rows.mean(0) if reduce == "mean" else rows.sum(0)))
            torch.testing.assert_close(enc(), torch.stack(expect))


def test_gradcheck_reaches_token_embeddings_projection_and_residual():
    enc = AttributeEncoder(5, 3, ATTRS, token_dim=4, hidden_dim=5).double()
    names = ["token_embeddings", "mlp.0.weight", "mlp.2.weight", "residual"]
    params = [enc.token_embeddings, enc.mlp[0].weight, enc.mlp[2].weight, enc.residual]
    assert torch.autograd.gradcheck(lambda *ps: torch.func.functional_call(enc, dict(zip(names, ps)), ()),
                                    [p.detach().clone().requires_grad_() for p in params])
    text = TextEncoder(5, 3, torch.randn(5, 7).double(), layers=2, hidden_dim=4).double()
    names = ["projection.0.weight", "projection.2.weight"]
    ps = [text.projection[0].weight, text.projection[2].weight]
    assert torch.autograd.gradcheck(lambda *q: torch.func.functional_call(text, dict(zip(names, q)), ()),
                                    [p.detach().clone().requires_grad_() for p in ps])


def test_loss_gradients_reach_the_encoder_and_it_is_in_the_class_embeddings_group():
    model = _segmenter(AttributeEncoder(5, 6, ATTRS))
    out = model(torch.randn(2, 3, 16, 16))
    loss = ESSLoss(k=3)(out, torch.randint(0, 5, (2, 16, 16)), model.class_embeddings())
    loss.backward()
    enc = model.class_encoder
    assert enc.token_embeddings.grad[:-1].abs().sum() > 0 and enc.mlp[0].weight.grad.abs().sum() > 0
    assert enc.token_embeddings.grad[-1].abs().sum() == 0  # the padding row
    groups = model.param_groups()
    assert {id(p) for p in groups["class_embeddings"]} == {id(p) for p in enc.parameters()}
    assert not {id(p) for p in groups["head"]} & {id(p) for p in enc.parameters()}


def test_label_set_swap_with_the_training_classes_equals_normal_prediction():
    model = _segmenter(AttributeEncoder(5, 6, ATTRS))
    with torch.no_grad():
        model.class_encoder.residual.normal_()  # a trained residual must be kept for known descriptions
    model.eval()
    images = torch.randn(2, 3, 16, 16)
    swapped = model.class_embeddings([list(reversed(t)) for t in ATTRS])  # token order does not matter
    assert torch.equal(swapped, model.class_embeddings())
    assert torch.equal(model.predict(images, class_embeddings=swapped), model.predict(images))
    # a subset in another order relabels accordingly
    sub = model.class_embeddings([ATTRS[3], ATTRS[0]])
    torch.testing.assert_close(sub, model.class_embeddings()[[3, 0]])
    text = _segmenter(TextEncoder(5, 6, torch.randn(5, 9)))
    with torch.no_grad():
        text.class_encoder.residual.normal_()
    text.eval()
    feats = text.class_encoder.text_features.clone()
    assert torch.equal(text.predict(images, class_embeddings=text.class_embeddings(feats)), text.predict(images))


def test_new_combination_gets_no_residual():
    enc = AttributeEncoder(4, 6, ATTRS[:4])
    with torch.no_grad():
        enc.residual.fill_(5.0)
        new = enc([["shape:a", "colour:red", "colour:blue"]])
        shared = enc.mlp(torch.stack([enc.token_embeddings[enc.vocab.index(t)] for t in
                                      ["shape:a", "colour:red", "colour:blue"]]).mean(0, keepdim=True))
    torch.testing.assert_close(new, shared)


def test_cache_is_used_without_grad_and_invalidated_by_a_step_and_load_state_dict():
    model = _segmenter(AttributeEncoder(5, 6, ATTRS))
    with torch.no_grad():
        a, b = model.class_embeddings(), model.class_embeddings()
    assert a is b
    opt = torch.optim.SGD(model.param_groups()["class_embeddings"], lr=0.5)
    model.class_embeddings().sum().backward()
    opt.step()
    with torch.no_grad():
        c = model.class_embeddings()
    assert c is not a and not torch.equal(c, a)
    torch.testing.assert_close(c, model.class_embeddings().detach())
    other = _segmenter(AttributeEncoder(5, 6, ATTRS))
    other.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})
    with torch.no_grad():
        d = other.class_embeddings()
        other.load_state_dict(model.state_dict())
        torch.testing.assert_close(other.class_embeddings(), c)
    assert not torch.equal(d, c)


def test_chunked_encoder_equals_one_chunk_with_and_without_grad():
    torch.manual_seed(0)
    attrs = [[f"a:{c % 7}", f"b:{c % 5}"] for c in range(50)]
    enc = AttributeEncoder(50, 4, attrs)
    with torch.no_grad():
        enc.residual.normal_()
    full = enc()
    enc.chunk_size = 8
    chunked = enc()
    torch.testing.assert_close(chunked, full)
    g_full = torch.autograd.grad(full.square().sum(), enc.token_embeddings)[0]
    g_chunked = torch.autograd.grad(chunked.square().sum(), enc.token_embeddings)[0]
    torch.testing.assert_close(g_chunked, g_full)


def test_create_model_rebuilds_encoders_from_config_and_state(tmp_path):
    feats = torch.randn(5, 9)
    np.save(tmp_path / "f.npy", feats.numpy())
    for name, options in (("attributes", {"class_attributes": ATTRS}), ("text", {"text_features": str(tmp_path / "f.npy")})):
        torch.manual_seed(0)
        model = create_model("fpn", "resnet18", num_classes=5, embedding_dim=6, class_encoder=name, class_encoder_options=options)
        assert model.config["class_encoder"] == name
        rebuilt = create_model(**model.config)
        rebuilt.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert torch.equal(rebuilt.class_embeddings(), model.class_embeddings())
        path = tmp_path / f"{name}.pt"
        torch.save({"state": model.state_dict(), "config": model.config}, path)
        assert torch.load(path, weights_only=True)["config"]["class_encoder"] == name


def test_class_list_tsv_round_trip_and_loader(tmp_path):
    path = write_class_list(tmp_path / "c.tsv", ATTRS, [f"name {c}" for c in range(5)])
    names, attrs = read_class_list(path, 5)
    assert attrs == ATTRS and names == [f"name {c}" for c in range(5)]
    assert load_class_list(path, "attributes") == (names, attrs)
    np.save(tmp_path / "t.npy", np.ones((3, 4), np.float32))
    (tmp_path / "t.txt").write_text("a\nb\nc\n")
    names, feats = load_class_list(tmp_path / "t.npy", "text")
    assert names == ["a", "b", "c"] and feats.shape == (3, 4)


# ------------------------------------------------------------------------------ bad input


def _one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


def test_text_feature_rows_must_equal_c(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(ConfigError) as err:
        TextEncoder(5, 6, str(tmp_path / "f.npy"))
    assert "has 4 rows but the model has C=5" in _one_line(err)


def test_missing_attribute_for_a_class(tmp_path):
    (tmp_path / "c.tsv").write_text("0\ta b\n1\t\n2\tc\n")
    with pytest.raises(ConfigError) as err:
        read_class_list(tmp_path / "c.tsv", 3)
    assert "no attribute tokens for class 1" in _one_line(err)
    (tmp_path / "d.tsv").write_text("0\ta b\n2\tc\n")
    with pytest.raises(ConfigError, match="no attribute tokens for class 1"):
        read_class_list(tmp_path / "d.tsv", 3)
    with pytest.raises(ConfigError, match="no attribute tokens for class 2"):
        AttributeEncoder(3, 4, [["a"], ["b"], []])


def test_unknown_token_at_test_time_is_named():
    model = _segmenter(AttributeEncoder(5, 6, ATTRS))
    with pytest.raises(ConfigError) as err:
        model.class_embeddings([["shape:a", "colour:green"]])
    assert "'colour:green'" in _one_line(err) and "class 0" in str(err.value)


def test_table_model_cannot_embed_new_classes():
    model = _segmenter(None)
    with pytest.raises(ConfigError, match="cannot embed new classes"):
        model.class_embeddings([["a"]])
    with pytest.raises(ConfigError, match="cannot embed new classes"):
        load_class_list("x.tsv", "table")


def test_unknown_encoder_lists_the_names():
    with pytest.raises(ConfigError, match="table, attributes, text"):
        build_class_encoder("clip", 5, 6)
    with pytest.raises(ConfigError, match="needs class_attributes"):
        build_class_encoder("attributes", 5, 6)
    with pytest.raises(ConfigError, match="baseline"):
        create_model("fpn", "resnet18", num_classes=5, embedding_dim=None, class_encoder="attributes",
                     class_encoder_options={"class_attributes": ATTRS})

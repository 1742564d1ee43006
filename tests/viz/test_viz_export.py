"""`esseg export-embeddings` and `esseg export` (:mod:`esseg.export`): files load, match the model, errors exit 2.

They sit in tests/viz/ for the tiny trained checkpoints of tests/viz/conftest.py."""

import csv
import sys

import numpy as np
import pytest
import torch
from cli_checks import run_error
from conftest import NUM_CLASSES

from esseg.cli import main
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.evaluate import predict_batch
from esseg.errors import EssegError
from esseg.models import EmbeddingSegmenter
from esseg.export import (
    LabelMapModel,
    check_label_maps,
    export_model,
    random_images,
)


def eager(path):
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt, path)


def test_export_embeddings_files_match_the_model(ess_ckpt, tmp_path, capsys):
    assert main(["export-embeddings", "--checkpoint", ess_ckpt, "--out", str(tmp_path)]) == 0
    assert f"wrote {NUM_CLASSES} class embeddings of dimension 4" in capsys.readouterr().out
    ckpt, model = eager(ess_ckpt)
    want = model.class_embeddings().detach()
    pt = torch.load(tmp_path / "class_embeddings.pt", weights_only=True)
    assert pt.shape == (NUM_CLASSES, 4) and torch.equal(pt, want)
    assert np.array_equal(np.load(tmp_path / "class_embeddings.npy"), want.numpy())
    with (tmp_path / "classes.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["name"] for r in rows] == ckpt["class_names"]
    assert [int(r["index"]) for r in rows] == list(range(NUM_CLASSES))
    norms = model.class_table.detach().norm(dim=1)
    assert np.allclose([float(r["norm"]) for r in rows], norms.numpy(), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class_embeddings.npy", "class_embeddings.pt", "classes.tsv"]


def test_export_embeddings_of_a_baseline_is_one_line_error(baseline_ckpt, tmp_path, capsys):
    line = run_error(capsys, ["export-embeddings", "--checkpoint", baseline_ckpt, "--out", str(tmp_path)])
    assert "softmax baseline, which has no class embeddings" in line
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("which", ["ess_ckpt", "baseline_ckpt"])
def test_torchscript_export_matches_eager_predict(which, request, tmp_path, capsys):
    path = request.getfixturevalue(which)
    out = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", path, "--out", str(out), "--size", "32"]) == 0
    assert "matches eager predict" in capsys.readouterr().out
    _, model = eager(path)
    scripted = torch.jit.load(str(out))
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 3, 32, 32), (3, 3, 64, 40), (1, 3, 45, 37)]:  # other batch, sizes than the trace's
        images = torch.randn(*shape, generator=g)
        labels = scripted(images)
        assert labels.dtype == torch.int64 and labels.shape == (shape[0], *shape[2:])
        check_label_maps(model, images, predict_batch(model, images), labels, "scripted")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("which", ["ess_ckpt", "baseline_ckpt"])
def test_pt2_export_round_trip_equals_eager_predict(which, request, tmp_path, capsys):
    path = request.getfixturevalue(which)
    out = tmp_path / "model.pt2"
    assert main(["export", "--checkpoint", path, "--format", "pt2", "--out", str(out), "--size", "32"]) == 0
    assert "wrote pt2" in capsys.readouterr().out
    _, model = eager(path)
    exported = torch.export.load(str(out)).module()
    g = torch.Generator().manual_seed(3)
    # batch 1 and sizes that need no padding, unlike the (2, 3, 40, 27) example it was exported with
    for shape in [(1, 3, 32, 32), (3, 3, 64, 40), (1, 3, 45, 37)]:
        images = torch.randn(*shape, generator=g)
        with torch.no_grad():
            labels = exported(images)
        assert labels.dtype == torch.int64 and labels.shape == (shape[0], *shape[2:])
        assert torch.equal(labels, predict_batch(model, images))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"]  # no temporary file left


def test_pt2_export_failure_is_one_line_and_writes_nothing(ess_ckpt, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nwith a long explanation")

    monkeypatch.setattr(torch.export, "export", broken)
    line = run_error(capsys, ["export", "--checkpoint", ess_ckpt, "--format", "pt2", "--out", str(tmp_path / "m.pt2")])
    assert "torch.export failed: unsupported operator; try --format torchscript" in line
    assert not list(tmp_path.iterdir())


def test_label_map_graph_without_normalisation(unnormalized_ckpt):
    _, model = eager(unnormalized_ckpt)
    assert not model.normalize
    wrapper = LabelMapModel(model).eval()
    for images in random_images(32):
        with torch.no_grad():
            check_label_maps(model, images, predict_batch(model, images), wrapper(images), "wrapper")


def test_mismatch_is_an_error_but_exact_ties_are_not():
    torch.manual_seed(0)
    model = EmbeddingSegmenter(torch.nn.Conv2d(3, 3, 1), num_classes=4, embedding_dim=3).eval()
    with torch.no_grad():
        model.class_table[3] = model.class_table[1]  # classes 1 and 3 tie everywhere
    images = torch.randn(1, 3, 32, 32)
    expected = predict_batch(model, images)
    assert (expected == 1).any() and not (expected == 3).any()
    check_label_maps(model, images, expected, torch.where(expected == 1, 3, expected), "tie")
    wrong = expected.clone()
    wrong[0, 0, 0] = (wrong[0, 0, 0] + 2) % 4 if wrong[0, 0, 0] != 1 else 0
    with pytest.raises(EssegError, match=r"disagrees with the eager model's predict on 1 of 1024 pixels"):
        check_label_maps(model, images, expected, wrong, "broken")
    with pytest.raises(EssegError, match=r"returned label 4 outside \[0, 4\)"):
        check_label_maps(model, images, expected, torch.full_like(expected, 4), "out of range")
    with pytest.raises(EssegError, match="returned torch.int32"):
        check_label_maps(model, images, expected, expected.int(), "int32")


def test_failed_check_writes_nothing(ess_ckpt, tmp_path, monkeypatch):
    import esseg.export as export

    def broken(*args):
        raise EssegError("the exported torchscript model disagrees; nothing written")

    monkeypatch.setattr(export, "check_label_maps", broken)
    with pytest.raises(EssegError, match="disagrees"):
        export_model(ess_ckpt, tmp_path / "model.pt", size=32)
    assert not list(tmp_path.iterdir())


def test_onnx_without_packages_says_how_to_install(ess_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    line = run_error(capsys, ["export", "--checkpoint", ess_ckpt, "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert 'pip install "esseg[onnx]"' in line
    assert not list(tmp_path.iterdir())


def test_onnx_export_matches_eager_predict(ess_ckpt, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", ess_ckpt, "--format", "onnx", "--out", str(out), "--size", "32"]) == 0
    _, model = eager(ess_ckpt)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 48, 40)
    labels = torch.from_numpy(session.run(["labels"], {"images": images.numpy()})[0])
    check_label_maps(model, images, predict_batch(model, images), labels, "onnx")


def test_export_user_errors(ess_ckpt, tmp_path, capsys):
    assert "--size must be >= 8" in run_error(capsys, ["export", "--checkpoint", ess_ckpt, "--out", str(tmp_path / "m"),
                                                       "--size", "4"])
    assert "not found" in run_error(capsys, ["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m")])


def test_class_chunked_graph_equals_one_matmul_and_traces(ess_ckpt, monkeypatch):
    import esseg.export as export_module

    _, model = eager(ess_ckpt)
    images = random_images(32)[1]
    whole = LabelMapModel(model).eval()
    with torch.no_grad():
        want = whole(images)
        monkeypatch.setattr(export_module, "EXPORT_CLASS_CHUNK", 5)  # NUM_CLASSES in chunks of 5, a ragged last one
        assert NUM_CLASSES > 5 and NUM_CLASSES % 5
        chunked = LabelMapModel(model).eval()
        assert torch.equal(chunked(images), want)
        traced = torch.jit.trace(chunked, images[:1], check_trace=False)
        assert torch.equal(traced(images), want)  # the unrolled chunks hold for another batch and size
    check_label_maps(model, images, predict_batch(model, images), want, "chunked")

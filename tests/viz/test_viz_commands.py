"""`esseg viz <figure>` on tiny checkpoints: each PNG exists, decodes and has the expected size."""

import csv

import pytest
from cli_checks import run_error
from conftest import NUM_CLASSES, VAL_LENGTH
from PIL import Image

from esseg.cli import main
from esseg.viz import analysis, figures

PANEL = round(figures.PANEL_INCHES * figures.DPI)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes the whole image
        assert im.format == "PNG"
        return im.size


def test_norms_figure_notes_normalisation_on_the_plot(ess_ckpt, unnormalized_ckpt, tmp_path, capsys):
    assert main(["viz", "norms", "--checkpoint", ess_ckpt, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "note: the model normalises its embeddings" in out
    assert png_size(tmp_path / "norms.png") == (1200, 500)
    with (tmp_path / "norms.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == NUM_CLASSES and rows[0]["class_name"].startswith("stuff:")
    assert sum(int(r["pixels"]) for r in rows) == VAL_LENGTH * 32 * 32

    normalized = analysis.norms_figure(ess_ckpt, tmp_path / "a")
    assert "normalises its embeddings" in normalized["note"]
    plain = analysis.norms_figure(unnormalized_ckpt, tmp_path / "b", num_samples=2)
    assert plain["note"] is None and png_size(plain["path"]) == plain["size"] == (1200, 500)


def test_projection_pca_and_tsne(ess_ckpt, tmp_path, capsys):
    assert main(["viz", "projection", "--checkpoint", ess_ckpt, "--out", str(tmp_path), "--index", "1"]) == 0
    assert png_size(tmp_path / "projection_pca_1.png") == (1300, 600)
    pytest.importorskip("sklearn")
    argv = ["viz", "projection", "--checkpoint", ess_ckpt, "--out", str(tmp_path), "--method", "tsne", "--max-pixels", "120"]
    assert main(argv) == 0
    assert png_size(tmp_path / "projection_tsne_0.png") == (1300, 600)
    assert "tsne projection of sample 0" in capsys.readouterr().out


def test_rgb_rows_per_index(ess_ckpt, tmp_path):
    assert main(["viz", "rgb", "--checkpoint", ess_ckpt, "--out", str(tmp_path), "--index", "0", "2"]) == 0
    assert png_size(tmp_path / "rgb.png") == (3 * PANEL, 2 * PANEL + 60)


def test_dendrogram_leaves_are_the_most_frequent_class_names(ess_ckpt, tmp_path):
    result = analysis.dendrogram_figure(ess_ckpt, tmp_path, top=6)
    assert png_size(tmp_path / "dendrogram.png") == result["size"] == (900, 150 + 22 * 6)
    from esseg.data import build_dataset
    from esseg.viz.embeddings import class_pixel_counts, top_classes

    val = build_dataset("glyph_scenes", split="val", num_classes=NUM_CLASSES, size=32, length=VAL_LENGTH)
    expected = {val.classes[c] for c in top_classes(class_pixel_counts(val, 200), 6).tolist()}
    assert len(result["leaves"]) == 6 and set(result["leaves"]) == expected
    assert main(["viz", "dendrogram", "--checkpoint", ess_ckpt, "--out", str(tmp_path), "--top", "100"]) == 0  # all C


def test_class_iou_compares_two_checkpoints(ess_ckpt, baseline_ckpt, tmp_path, capsys):
    argv = ["viz", "class-iou", "--checkpoint", ess_ckpt, "--compare", baseline_ckpt, "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "checkpoint: mIoU" in out and "compare: mIoU" in out
    w, h = png_size(tmp_path / "class_iou.png")
    assert h == 550 and w >= 900
    with (tmp_path / "class_iou.tsv").open() as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0][3].startswith("IoU ESS d=4") and rows[0][4].startswith("IoU baseline")
    pixels = [int(r[2]) for r in rows[1:]]
    assert pixels == sorted(pixels, reverse=True)  # most frequent first


def test_panels_with_and_without_compare(ess_ckpt, baseline_ckpt, tmp_path):
    argv = ["viz", "panels", "--checkpoint", ess_ckpt, "--out", str(tmp_path / "one"), "--num", "2"]
    assert main(argv) == 0
    assert png_size(tmp_path / "one" / "panels.png") == (3 * PANEL, 2 * PANEL + 60)
    argv = ["viz", "panels", "--checkpoint", ess_ckpt, "--compare", baseline_ckpt, "--out", str(tmp_path), "--index", "1",
            "--num", "10"]  # clipped to the 3 samples left
    assert main(argv) == 0
    assert png_size(tmp_path / "panels.png") == (4 * PANEL, 3 * PANEL + 60)


@pytest.mark.parametrize("figure", ["norms", "projection", "rgb", "dendrogram"])
def test_embedding_figures_refuse_a_baseline(figure, baseline_ckpt, tmp_path, capsys):
    line = run_error(capsys, ["viz", figure, "--checkpoint", baseline_ckpt, "--out", str(tmp_path)])
    assert f"viz {figure} needs an ESS model" in line and "softmax baseline" in line


def test_viz_user_errors(ess_ckpt, tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    line = run_error(capsys, ["viz", "projection", "--checkpoint", ess_ckpt, *out, "--index", "9"])
    assert f"--index 9 is out of range: the split has {VAL_LENGTH} samples" in line
    assert "not found" in run_error(capsys, ["viz", "panels", "--checkpoint", str(tmp_path / "nope.pt"), *out])
    assert "--top must be >= 2" in run_error(capsys, ["viz", "dendrogram", "--checkpoint", ess_ckpt, *out, "--top", "1"])
    assert "--linkage 'nope'" in run_error(capsys, ["viz", "dendrogram", "--checkpoint", ess_ckpt, *out, "--linkage", "nope"])
    line = run_error(capsys, ["viz", "norms", "--checkpoint", ess_ckpt, *out, "--set", "data.options={num_classes: 9, size: 32}"])
    assert f"predicts {NUM_CLASSES} classes but dataset 'glyph_scenes' (val) has 9" in line
    assert "unknown dataset 'nope'" in run_error(capsys, ["viz", "rgb", "--checkpoint", ess_ckpt, *out, "--dataset", "nope"])
    assert not list(tmp_path.iterdir())  # nothing written on errors


def test_compare_needs_the_same_label_space(ess_ckpt, tmp_path, capsys):
    import torch

    other = torch.load(ess_ckpt, weights_only=True)
    other["class_names"] = [f"class {c}" for c in range(NUM_CLASSES)]
    torch.save(other, tmp_path / "other.pt")
    line = run_error(capsys, ["viz", "class-iou", "--checkpoint", ess_ckpt, "--compare", str(tmp_path / "other.pt"),
                              "--out", str(tmp_path)])
    assert "compare models of one label space" in line


@pytest.mark.parametrize("command", [["viz", "norms"], ["viz", "projection"], ["viz", "rgb"], ["viz", "dendrogram"],
                                     ["viz", "class-iou"], ["viz", "panels"], ["export-embeddings"], ["export"]])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: esseg " + " ".join(command) in capsys.readouterr().out


def test_export_embeddings_help_names_the_files_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["export-embeddings", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "class_embeddings.pt, class_embeddings.npy and classes.tsv" in text and "PNG" not in text

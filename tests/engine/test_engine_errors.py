"""Every user error exits 2 with one `esseg: error: ...` line and no traceback."""

import pytest
import torch
from cli_checks import run_error
from engine_tiny import NUM_CLASSES, tiny_args
from PIL import Image

import esseg.engine.train as train_module


@pytest.mark.parametrize("extra, message", [
    (["--set", "loss.kk=3"], "unknown config key 'loss.kk'; valid keys: data.dataset"),
    (["--set", "train.amp=maybe"], "train.amp must be bool, got 'maybe'"),
    (["--crop-size", "0"], "data.crop_size must be an int or [height, width] > 0"),
    (["--dataset", "nope"], "unknown dataset 'nope'; known datasets: "),
    (["--config", "/nonexistent.yaml"], "config file /nonexistent.yaml not found"),
    (["--resume", "/nonexistent/last.pt"], "resume checkpoint /nonexistent/last.pt not found"),
])
def test_train_config_errors(tmp_path, capsys, extra, message):
    assert message in run_error(capsys, ["train", *tiny_args(tmp_path / "run"), *extra])


def test_missing_dataset(tmp_path, capsys):
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "run"), "--dataset", "cityscapes", "--data-root", str(tmp_path / "missing")])
    assert "Cityscapes" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(tmp_path, capsys):
    assert "no CUDA GPU is available" in run_error(capsys, ["train", *tiny_args(tmp_path / "run"), "--device", "cuda"])


def test_k_larger_than_number_of_negatives(tmp_path, capsys):
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "run"), "--set", f"loss.k={NUM_CLASSES}"])
    assert f"loss.k={NUM_CLASSES} exceeds the {NUM_CLASSES - 1} negatives" in line


def test_resume_checkpoint_of_another_architecture(trained_run, tmp_path, capsys):
    line = run_error(capsys, ["train", *tiny_args(tmp_path / "run"), "--resume", str(trained_run / "last.pt"), "--encoder", "resnet18"])
    assert "holds a model with encoder='mobilenet_v2' but the config asks for encoder='resnet18'" in line


def test_eval_checkpoint_for_another_class_count(trained_run, capsys):
    line = run_error(capsys, ["eval", "--checkpoint", str(trained_run / "last.pt"), "--device", "cpu",
                              "--set", "data.options={num_classes: 9, size: 32, length: 2}"])
    assert f"predicts {NUM_CLASSES} classes but dataset 'glyph_scenes' (val) has 9" in line


def test_bad_checkpoint_files(tmp_path, capsys):
    assert "checkpoint /nonexistent.pt not found" in run_error(capsys, ["eval", "--checkpoint", "/nonexistent.pt"])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in run_error(capsys, ["eval", "--checkpoint", str(garbage)])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(image)
    assert "is not an esseg checkpoint" in run_error(capsys, ["predict", "--checkpoint", str(foreign), str(image), "--out", str(tmp_path)])


def test_predict_missing_input(trained_run, tmp_path, capsys):
    line = run_error(capsys, ["predict", "--checkpoint", str(trained_run / "last.pt"), str(tmp_path / "nope.png"), "--out", str(tmp_path)])
    assert "nope.png does not exist" in line


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    build = train_module.build_criterion

    def nan_on_second_call(*args, **kwargs):
        criterion = build(*args, **kwargs)
        forward, calls = criterion.forward, []

        def patched(*a, **k):
            calls.append(1)
            loss = forward(*a, **k)
            return loss * float("nan") if len(calls) == 2 else loss

        criterion.forward = patched
        return criterion

    monkeypatch.setattr(train_module, "build_criterion", nan_on_second_call)
    out = tmp_path / "run"
    line = run_error(capsys, ["train", *tiny_args(out), "--set", "train.save_every=1"])
    assert "training loss is not finite (loss=nan" in line and "at iteration 2" in line
    assert f"last good checkpoint: {out / 'last.pt'} (iteration 1)" in line
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 1


def test_diverging_lr_with_a_padded_class_table_stops_with_the_non_finite_message(tmp_path, capsys):
    # C = 20 < 32: the exact kNN search pads the class table; NaN embeddings once returned its dummy ids.
    args = tiny_args(tmp_path / "run", "--iters", "6", "--set", "data.options={num_classes: 20, size: 32, length: 6}",
                     "optim.lr=1e30", "optim.optimizer=adamw")
    line = run_error(capsys, ["train", *args])
    assert "training loss is not finite (loss=" in line and "try a lower optim.lr" in line, line


def test_eval_and_predict_with_a_nan_checkpoint_are_one_line_errors(trained_run, tmp_path, capsys):
    ckpt = torch.load(trained_run / "last.pt", weights_only=True)
    ckpt["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    nan_ckpt = tmp_path / "nan.pt"
    torch.save(ckpt, nan_ckpt)
    line = run_error(capsys, ["eval", "--checkpoint", str(nan_ckpt), "--device", "cpu"])
    assert "hold NaN or inf" in line and "use an earlier checkpoint" in line, line
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 24), (90, 140, 30)).save(image)
    out = tmp_path / "pred"
    line = run_error(capsys, ["predict", "--checkpoint", str(nan_ckpt), str(image), "--out", str(out), "--device", "cpu"])
    assert "hold NaN or inf" in line, line
    assert not out.exists() or not any(out.iterdir())


class Foreign:
    """A class a hostile or foreign checkpoint may pickle."""


def test_unsafe_checkpoints_give_no_unsafe_advice_and_no_escape_codes(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}, "model_config": {}, "extra": Foreign()}, foreign)
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(b"\x80\x02c\x1b[31mevil\x1b[0m\nthing\n.")  # a pickle global with escape codes in its name
    for path, name in [(foreign, "Foreign"), (crafted, "evil.thing")]:
        line = run_error(capsys, ["eval", "--checkpoint", str(path)])
        assert f"cannot read checkpoint {path}: it holds objects other than tensors and plain values" in line, line
        assert name in line and "\x1b" not in line and line.isprintable(), line
        for advice in ("weights_only", "can still be loaded", "safe_globals", "trust"):
            assert advice not in line, line


def test_hostile_config_files_through_the_cli(tmp_path, capsys):
    binary = tmp_path / "last.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "is not a YAML text file" in run_error(capsys, ["train", *tiny_args(tmp_path / "run"), "--config", str(binary)])
    bomb = tmp_path / "bomb.yaml"
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb.write_text("\n".join(levels) + "\ndata: *a8\n")
    assert "an alias bomb?" in run_error(capsys, ["train", *tiny_args(tmp_path / "run"), "--config", str(bomb)])


def test_dataset_root_hint_names_the_flags_of_each_command(tmp_path, capsys):
    line = run_error(capsys, ["train", "--dataset", "voc", "--data-root", str(tmp_path / "none"), "--device", "cpu",
                              "--out", str(tmp_path / "run")])
    assert "--data-root DIR (esseg train/eval) or --root DIR (esseg data inspect)" in line and "pass --root" not in line
    line = run_error(capsys, ["data", "inspect", "--dataset", "voc", "--root", str(tmp_path / "none")])
    assert "--root DIR (esseg data inspect)" in line


def test_training_images_not_a_multiple_of_the_network_input(tmp_path, capsys):
    # A user's own folder of 24x40 images: DeepLabV3+ needs multiples of 16. One line, exit 2,
    # and the suggested crop then trains.
    import numpy as np

    from esseg.cli import main

    root = tmp_path / "data"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    for split in ("train", "val"):
        for i in range(2):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((24, 40, 3), 60 * i, np.uint8)).save(root / "images" / split / f"s{i}.png")
            Image.fromarray(np.full((24, 40), i, np.uint8)).save(root / "labels" / split / f"s{i}.png")
    args = ["train", "--dataset", "folder", "--data-root", str(root), "--iters", "1", "--batch-size", "2",
            "--device", "cpu", "--set", "train.num_vis=0", "train.tensorboard=false", "model.encoder_weights=null",
            "data.class_frequency=none", "loss.k=1"]
    line = run_error(capsys, [*args, "--out", str(tmp_path / "r1")])
    assert "training images are 24x40" in line and "multiples of 16: pass --crop-size 16" in line
    assert main([*args, "--out", str(tmp_path / "r2"), "--crop-size", "16"]) == 0


def test_non_finite_gradient_with_a_finite_loss_stops_before_the_weights_change(tmp_path, capsys, monkeypatch):
    # d sqrt(|x|)/dx at x = 0 is 0 * inf = NaN: the loss stays finite, every output gradient is NaN.
    build = train_module.build_criterion

    def nan_gradient_on_second_call(*args, **kwargs):
        criterion = build(*args, **kwargs)
        forward, calls = criterion.forward, []

        def patched(outputs, *a, **k):
            calls.append(1)
            loss = forward(outputs, *a, **k)
            return loss + (outputs * 0).abs().sqrt().sum() if len(calls) == 2 else loss

        criterion.forward = patched
        return criterion

    monkeypatch.setattr(train_module, "build_criterion", nan_gradient_on_second_call)
    out = tmp_path / "run"
    line = run_error(capsys, ["train", *tiny_args(out), "--set", "train.save_every=1"])
    assert "gradients are not finite though the loss is (loss=" in line and "first in net." in line, line
    assert "at iteration 2" in line and f"last good checkpoint: {out / 'last.pt'} (iteration 1)" in line, line
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_check_finite_gradients_names_the_first_bad_parameter():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net(torch.ones(1, 2)).sum().backward()
    train_module.check_finite_gradients(net, 1.0)  # all finite: no error
    net[1].weight.grad[0, 1] = float("inf")
    with pytest.raises(train_module.NonFiniteLossError, match=r"first in 1\.weight"):
        train_module.check_finite_gradients(net, 1.0)

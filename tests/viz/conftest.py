"""Shared fixtures of the viz tests: tiny trained checkpoints per session."""

import pytest
import torch

from esseg.engine.config import load_config
from esseg.engine.train import train

NUM_CLASSES = 12
SIZE = 32
VAL_LENGTH = 4


def _train(out, method: str, iters: int):
    cfg = load_config(None, [
        f"data.options={{num_classes: {NUM_CLASSES}, size: {SIZE}, length: 8}}", f"data.val_options={{length: {VAL_LENGTH}}}",
        f"model.method={method}", "model.embedding_dim=4", "loss.k=3", "train.tensorboard=false", "train.log_every=100",
        f"train.iters={iters}", "train.batch_size=2", "train.eval_batch_size=4", "train.device=cpu", "train.num_threads=1",
        f"train.out_dir={out}",
    ])
    before = torch.get_num_threads()
    try:
        return train(cfg)["last_checkpoint"]
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ess_ckpt(tmp_path_factory):
    """An ESS checkpoint (normalised embeddings, d=4) after 3 iterations on 12-class 32x32 glyph scenes."""
    return str(_train(tmp_path_factory.mktemp("viz") / "ess", "ess", 3))


@pytest.fixture(scope="session")
def baseline_ckpt(tmp_path_factory):
    """A softmax-baseline checkpoint after 1 iteration on the same data."""
    return str(_train(tmp_path_factory.mktemp("viz") / "baseline", "baseline", 1))


@pytest.fixture(scope="session")
def unnormalized_ckpt(ess_ckpt, tmp_path_factory):
    """The ESS checkpoint rebuilt as a model without normalisation (``normalize=False``; same weights)."""
    ckpt = torch.load(ess_ckpt, weights_only=True)
    ckpt["model_config"]["normalize"] = False
    path = tmp_path_factory.mktemp("viz") / "unnormalized.pt"
    torch.save(ckpt, path)
    return str(path)

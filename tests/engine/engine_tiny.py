"""Tiny glyph-scenes settings shared by the engine tests (imported as a plain module)."""

NUM_CLASSES = 8


def tiny_args(out, *extra: str) -> list[str]:
    """CLI arguments for a seconds-long CPU run: 8 classes, 32x32 scenes, 2 iterations of batch 2."""
    return [
        "--set", f"data.options={{num_classes: {NUM_CLASSES}, size: 32, length: 6}}", "data.val_options={length: 3}",
        "model.embedding_dim=4", "loss.k=3", "train.log_every=1", "train.tensorboard=false", "train.eval_batch_size=2",
        "--iters", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out), *extra,
    ]

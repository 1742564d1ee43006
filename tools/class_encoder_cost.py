"""Step time and peak memory of an ESS training step with a class encoder vs the free table.

Times ``esseg.engine.train.train_step`` (the step a user's run takes) on random 64x64 batches
with the demo's recipe (DeepLabV3+ MobileNetV2, d = 64, k = 32, AdamW), the two variants'
steps interleaved in one process so that load from other processes hits both alike; the
median per variant is reported with the ratio. Peak memory is measured in a fresh process
per variant as ``esseg bench memory`` measures it (everything the training holds at the worst
moment of one step above the bare runtime), plus the learned numbers of the class part.
Optionally also times the class encoder alone (forward + backward of ``class_embeddings()``,
and the cached no-grad lookup) at a very large C.

    PYTHONPATH=src OMP_NUM_THREADS=1 python tools/class_encoder_cost.py --classes 10000 --steps 20 \
        --encoder-only-classes 1000000 --out runs/encoders_cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from esseg import ESSLoss, build_optimizer, create_model
from esseg.bench.common import MemoryMeter, exact_malloc, release_free_memory
from esseg.engine.train import train_step
from esseg.models.class_encoders import encoder_param_count

VARIANTS = ("table", "attributes")


def _attributes(num_classes: int) -> list[list[str]]:
    if num_classes <= 20000:
        from esseg.data.glyph_scenes import GlyphScenes

        return GlyphScenes(num_classes=num_classes, length=1).class_attributes
    # beyond glyph scenes' comfortable range: 3 tokens from vocabularies of 100 / 100 / 101 values
    return [[f"a:{c % 100}", f"b:{(c // 100) % 100}", f"c:{c // 10000}"] for c in range(num_classes)]


def _setup(variant: str, num_classes: int, attrs, seed: int = 0):
    torch.manual_seed(seed)
    extra = {} if variant == "table" else {"class_encoder": "attributes", "class_encoder_options": {"class_attributes": attrs}}
    model = create_model("deeplabv3plus", "mobilenet_v2", num_classes=num_classes, embedding_dim=64, normalize=False, **extra)
    model.train()
    criterion = ESSLoss(k=32, tau=1.0, margin=0.5, ignore_index=-1)
    optimizer = build_optimizer(model, lr=0.01, optimizer="adamw", backbone_lr_mult=1.0, backbone_bn_momentum=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    g = torch.Generator().manual_seed(seed)
    batch = (torch.randn(8, 3, 64, 64, generator=g), torch.randint(0, num_classes, (8, 64, 64), generator=g))

    def batches():
        while True:
            yield batch

    return model, criterion, optimizer, scaler, batches()


def _step(parts) -> float:
    model, criterion, optimizer, scaler, batches = parts
    t = time.perf_counter()
    train_step(model, criterion, optimizer, scaler, batches, torch.device("cpu"))
    return time.perf_counter() - t


def memory_child(variant: str, num_classes: int, steps: int) -> dict:
    """(In a fresh process.) Peak memory of one training step, measured as ``esseg bench memory`` does.

    ``peak_bytes = peak - runtime``: the resident-set high-water mark (VmHWM, reset before the
    step) during ONE step after ``steps`` warm-up steps, minus the resident size after imports;
    glibc returns freed buffers to the OS (``exact_malloc``) so the mark follows live tensors.
    """
    exact_malloc()
    meter = MemoryMeter(torch.device("cpu"))
    attrs = _attributes(num_classes) if variant != "table" else None
    release_free_memory()
    runtime = meter.current()
    parts = _setup(variant, num_classes, attrs)
    for _ in range(steps):
        _step(parts)
    parts[2].zero_grad(set_to_none=True)
    release_free_memory()
    meter.reset_peak()
    _step(parts)
    return {"variant": variant, "num_classes": num_classes, "peak_bytes": meter.peak() - runtime,
            "peak_method": meter.method, "class_params": encoder_param_count(parts[0].class_encoder, num_classes, 64)}


def encoder_only(num_classes: int, repeats: int = 3) -> dict:
    """Forward + backward of class_embeddings() and the cached no-grad lookup, attributes encoder alone."""
    from esseg.models.class_encoders import AttributeEncoder
    from esseg.models.segmenter import EmbeddingSegmenter

    attrs = _attributes(num_classes)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = EmbeddingSegmenter(torch.nn.Identity(), num_classes, 64, normalize=False,
                               class_encoder=AttributeEncoder(num_classes, 64, attrs))
    build = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.class_embeddings().square().mean().backward()
        times.append(time.perf_counter() - t)
    with torch.no_grad():
        t = time.perf_counter()
        model.class_embeddings()
        first = time.perf_counter() - t
        t = time.perf_counter()
        model.class_embeddings()
        cached = time.perf_counter() - t
    return {"num_classes": num_classes, "build_s": build, "fwd_bwd_s": statistics.median(times),
            "no_grad_first_s": first, "no_grad_cached_s": cached,
            "params": encoder_param_count(model.class_encoder, num_classes, 64), "table_params": num_classes * 64}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=10000)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 3 warm-up steps)")
    p.add_argument("--memory-steps", type=int, default=2, help="warm-up steps before the measured step")
    p.add_argument("--encoder-only-classes", type=int, default=0, help="also time the encoder alone at this C (0: skip)")
    p.add_argument("--out", default="runs/encoders_cost")
    p.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "C"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]), args.memory_steps)))
        return 0
    c = args.classes
    attrs = _attributes(c)
    runs = {v: _setup(v, c, attrs) for v in VARIANTS}
    for _ in range(3):
        for v in VARIANTS:
            _step(runs[v])
    times = {v: [] for v in VARIANTS}
    for _ in range(args.steps):
        for v in VARIANTS:
            times[v].append(_step(runs[v]))
    result = {"num_classes": c, "batch": 8, "crop": 64, "embedding_dim": 64, "k": 32, "steps": args.steps,
              "step_s": {v: statistics.median(times[v]) for v in VARIANTS}}
    result["step_ratio"] = result["step_s"]["attributes"] / result["step_s"]["table"]
    del runs
    mem = {}
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--memory-child", v, str(c), "--memory-steps", str(args.memory_steps)],
                             check=True, capture_output=True, text=True).stdout
        mem[v] = json.loads(out.strip().splitlines()[-1])
    result["peak_bytes"] = {v: mem[v]["peak_bytes"] for v in VARIANTS}
    result["peak_method"] = mem["table"]["peak_method"]
    result["memory_ratio"] = mem["attributes"]["peak_bytes"] / mem["table"]["peak_bytes"]
    result["class_params"] = {v: mem[v]["class_params"] for v in VARIANTS}
    if args.encoder_only_classes:
        result["encoder_only"] = encoder_only(args.encoder_only_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

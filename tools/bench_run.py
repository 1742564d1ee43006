"""Train one run of ``esseg bench accuracy`` on its own: the same config (recipe, harness keys,
``--variant`` overrides) without training the runs it would be compared with.

Used for the seed studies of docs/RESULTS.md (issue 14), where the baselines had already been
trained and only ESS variants were new; ``esseg bench accuracy`` itself trains every run it compares.

    PYTHONPATH=src python tools/bench_run.py --classes 200 --iters 1300 --eval-every 260 --seed 1 \\
        --method ess --out runs/t14/up3_s1 model.unit_pixels=false loss.tau=3
"""

from __future__ import annotations

import argparse

import torch

from esseg.bench import accuracy
from esseg.engine.train import train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, required=True, help="C")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=("ess", "baseline"), default="ess")
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (train.stop_at; for timing runs)")
    p.add_argument("--log-every", type=int, default=None, help="training log interval (default: the harness's)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config keys, as after --variant NAME")
    a = p.parse_args(argv)
    s = accuracy.AccuracySettings(
        classes=[a.classes], iters=a.iters, batch=a.batch, size=64, eval_every=a.eval_every, val_images=200,
        ablations=False, ablation_classes=[a.classes], equal_memory=False, baseline_batch=None, threads=1,
        device="cpu", zipf=1.0, difficulty=0.0, seed=a.seed, out=a.out, quick=False, overrides=[], isolation="fork")
    cfg = accuracy.build_config(s, accuracy.RunSpec("run", a.method, a.classes, a.batch, "variant", overrides=a.overrides))
    cfg.train.out_dir = a.out
    if a.stop_at is not None:
        cfg.train.stop_at = a.stop_at
    if a.log_every is not None:
        cfg.train.log_every = a.log_every
    torch.set_num_threads(1)
    train(cfg)


if __name__ == "__main__":
    main()

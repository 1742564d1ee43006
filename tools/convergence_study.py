"""Why does ESS learn more slowly than the softmax baseline from random init? One variant per run.

A plain training loop (no checkpoints, no logging) on glyph scenes that changes one factor at a
time: the loss (kNN / exact / the baseline / diagnostic heads), d, k, tau, normalisation, the
class table's learning rate, the query stride. It prints one ``RESULT`` line per evaluation
with PAcc, mIoU and the thing/stuff split. ``docs/RESULTS.md`` ("Why ESS learned slowly") holds
the table this produced, with the command lines.

Examples (the table's first rows)::

    python tools/convergence_study.py --method baseline --steps 300
    python tools/convergence_study.py --method ess --steps 300                 # paper: d=12, k=8, tau=0.05
    python tools/convergence_study.py --method ess --mode exact --steps 300    # softmax over all C
    python tools/convergence_study.py --method ess --d 64 --k 32 --tau 0.1 --steps 1300 --evals 300,600,900

Diagnostic heads (not ESS): ``--method linear`` trains logits ``x . W_c / tau`` over all C with
a (C, d) table (a factorised C-logit head; with ``--no-normalize`` nothing is normalised);
``--method cos`` trains ``2 x^.mu^_c / tau`` (+ a learned per-class bias with ``--bias``), which
for unit vectors equals ESS's exact mode up to a constant.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from esseg import ESSLoss, PolyLR, SoftmaxCrossEntropyLoss, build_optimizer, create_model
from esseg.data import build_dataset
from esseg.engine.evaluate import evaluate


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=("ess", "baseline", "linear", "cos"), default="ess")
    p.add_argument("--classes", type=int, default=200, help="glyph scenes classes C (default 200)")
    p.add_argument("--size", type=int, default=64, help="scene side in pixels (default 64)")
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--evals", default="", help="extra evaluation steps, e.g. 300,600 (the last step always)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d", type=int, default=12, help="embedding dimension (ESS and the diagnostic heads)")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--mode", choices=("knn", "random", "exact"), default="knn")
    p.add_argument("--query-stride", type=int, default=4)
    p.add_argument("--reg-weight", type=float, default=1.0)
    p.add_argument("--no-normalize", action="store_true", help="no L2 normalisation of pixel/class embeddings")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--table-lr-mult", type=float, default=1.0, help="class table lr = lr x this")
    p.add_argument("--bias", action="store_true", help="--method cos: add a learned per-class bias")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def group_summary(m: dict) -> str:
    return " ".join(f"{k}={m[k]:.3f}" for k in ("PAcc", "mIoU", "thing_mIoU", "thing_Acc", "stuff_mIoU"))


def main(argv=None) -> list[dict]:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train_set = build_dataset("glyph_scenes", split="train", num_classes=a.classes, size=a.size, seed=0)
    val_set = build_dataset("glyph_scenes", split="val", num_classes=a.classes, size=a.size, seed=0, length=a.val_images)
    c, ignore = train_set.num_classes, train_set.ignore_index
    model = create_model("deeplabv3plus", "mobilenet_v2", num_classes=c,
                         embedding_dim=None if a.method == "baseline" else a.d, normalize=not a.no_normalize)
    bias = torch.nn.Parameter(torch.zeros(c)) if a.bias else None

    def cos_logits(out):
        return 2 * torch.einsum("bdhw,cd->bchw", out, model.class_embeddings()) / a.tau

    if a.method == "cos" and bias is not None:
        def predict(images):  # the bias takes part in the decision, as in training
            with torch.no_grad():
                return (cos_logits(model(images)) + bias.view(1, -1, 1, 1)).argmax(1)
        model.predict = predict

    if a.method == "ess":
        criterion = ESSLoss(k=a.k, tau=a.tau, reg_weight=a.reg_weight, mode=a.mode, query_stride=a.query_stride,
                            ignore_index=ignore)
    elif a.method == "baseline":
        criterion = SoftmaxCrossEntropyLoss(ignore_index=ignore)
    optimizer = build_optimizer(model, lr=a.lr, optimizer=a.optimizer, backbone_lr_mult=1.0, backbone_bn_momentum=0.1)
    if bias is not None:
        optimizer.add_param_group({"params": [bias], "lr": a.lr, "name": "bias", "poly_power": 0.9,
                                   "weight_decay": 0.0, "betas": (0.9, 0.999)})
    for group in optimizer.param_groups:
        if group["name"] == "class_embeddings":
            group["lr"] *= a.table_lr_mult
    scheduler = PolyLR(optimizer, a.steps)
    loader = DataLoader(train_set, batch_size=a.batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(a.seed))
    val_loader = DataLoader(val_set, batch_size=50)
    eval_at = {int(x) for x in a.evals.split(",") if x} | {a.steps}

    results, step, start = [], 0, time.time()
    model.train()
    while step < a.steps:
        for images, labels in loader:
            out = model(images)
            if a.method == "ess":
                loss = criterion(out, labels, model.class_embeddings())
            elif a.method == "baseline":
                loss = criterion(out, labels)
            elif a.method == "linear":
                loss = F.cross_entropy(torch.einsum("bdhw,cd->bchw", out, model.class_table) / a.tau, labels,
                                       ignore_index=ignore)
            else:
                z = cos_logits(out) + (bias.view(1, -1, 1, 1) if bias is not None else 0)
                loss = F.cross_entropy(z, labels, ignore_index=ignore)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step} loss {loss.item():.3f} {time.time() - start:.0f} s", flush=True)
            if step in eval_at:
                seconds = time.time() - start
                m = evaluate(model, val_loader, c, ignore, "cpu", list(train_set.classes),
                             class_groups=train_set.class_groups)
                results.append({"step": step, "seconds": seconds, **{k: v for k, v in m.items() if not isinstance(v, list)}})
                print(f"RESULT step={step} t={seconds:.0f}s {group_summary(m)}", flush=True)
                model.train()
            if step >= a.steps:
                break
    return results


if __name__ == "__main__":
    main()

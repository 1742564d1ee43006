"""The paper's optimiser recipe (Sec. 4.1): SGD with per-group momentum and poly LR, and the
backbone's BatchNorm momentum (a separate, explicit step: :func:`set_backbone_bn_momentum`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    backbone_lr_mult: float = 0.1,
    poly_power: float = 0.9,
    class_embedding_momentum: float = 0.95,
    class_embedding_poly_power: float = 0.95,
    class_embedding_weight_decay: float = 0.0,
    class_embedding_lr_mult: float = 1.0,
    temperature_lr_mult: float = 1.0,
    optimizer: str = "sgd",
) -> torch.optim.Optimizer:
    """SGD over the model's parameter groups, as in Sec. 4.1 (or AdamW with the same groups).

    Groups (each carries ``name`` and ``poly_power`` for :class:`PolyLR`):

    ============== ================================== ========== =============== ============
    group          lr                                 momentum   weight decay    poly power
    ============== ================================== ========== =============== ============
    backbone       ``lr * backbone_lr_mult``          0.9        1e-4            0.9
    head           ``lr``                             0.9        1e-4            0.9
    class table    ``lr * class_embedding_lr_mult``   0.95       0 (see below)   0.95
    temperature    ``lr * temperature_lr_mult``       0.9        0               0.9
    ============== ================================== ========== =============== ============

    The ``temperature`` group exists only for a model with a learned temperature
    (``model.learn_temperature``: the scalar ``log_scale``; no decay, which would pull 1/tau to 1).

    The paper leaves the class table's weight decay unstated; it defaults to 0 because the
    table is L2-normalised before use, so decay would only shrink its raw norm.
    The model is not changed: the paper's backbone BatchNorm momentum of 0.01 is a separate
    step, :func:`set_backbone_bn_momentum` (the engine calls both).

    Args:
        model: an :class:`~esseg.models.EmbeddingSegmenter` / :class:`~esseg.models.BaselineSegmenter`
            (anything with ``param_groups()``), or a plain module (one ``head`` group).
        lr: base learning rate of the head.
        optimizer: ``"sgd"`` (the paper) or ``"adamw"``, which keeps the groups, their learning
            rates and weight decays and uses each group's momentum as Adam's beta1 (beta2 0.999).
            AdamW trains randomly initialised networks in far fewer steps (the CPU demo uses it).

    Raises:
        ValueError: a momentum outside [0, 1) or a poly power <= 0.
    """
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw'; got {optimizer!r}")
    for name, value in (("momentum", momentum), ("class_embedding_momentum", class_embedding_momentum)):
        if not 0 <= value < 1:  # SGD momentum; Adam's beta1 with adamw
            use = "Adam's beta1, " if optimizer == "adamw" else ""
            raise ValueError(f"{name} must be in [0, 1) ({use}paper: 0.9 / 0.95); got {value}")
    for name, value in (("poly_power", poly_power), ("class_embedding_poly_power", class_embedding_poly_power)):
        check_poly_power(value, name)
    groups = model.param_groups() if hasattr(model, "param_groups") else {"head": list(model.parameters())}
    settings = {
        "backbone": dict(lr=lr * backbone_lr_mult, momentum=momentum, weight_decay=weight_decay, poly_power=poly_power),
        "head": dict(lr=lr, momentum=momentum, weight_decay=weight_decay, poly_power=poly_power),
        "class_embeddings": dict(
            lr=lr * class_embedding_lr_mult, momentum=class_embedding_momentum, weight_decay=class_embedding_weight_decay,
            poly_power=class_embedding_poly_power,
        ),
        "temperature": dict(lr=lr * temperature_lr_mult, momentum=momentum, weight_decay=0.0, poly_power=poly_power),
    }
    param_groups = [
        {"params": params, "name": name, **settings[name]}
        for name, params in groups.items()
        if params
    ]
    if optimizer == "adamw":
        for group in param_groups:
            group["betas"] = (group.pop("momentum"), 0.999)
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def set_backbone_bn_momentum(model: nn.Module, momentum: float | None = 0.01) -> int:
    """Set the momentum of every BatchNorm layer of the backbone (``model.net.encoder``) to ``momentum``.

    Running statistics then follow ``r <- (1 - momentum) * r + momentum * batch_stat`` (paper
    Sec. 4.1: 0.01 for the backbone; the head keeps torch's 0.1). ``None`` changes nothing, as
    does a model without ``net.encoder``. Returns the number of layers changed.

    Raises:
        ValueError: ``momentum`` outside [0, 1].
    """
    if momentum is None:
        return 0
    if not 0 <= momentum <= 1:
        raise ValueError(f"backbone BatchNorm momentum must be in [0, 1] (paper: 0.01); got {momentum}")
    encoder = getattr(getattr(model, "net", None), "encoder", None)
    if not isinstance(encoder, nn.Module):
        return 0
    layers = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = momentum
    return len(layers)


def check_poly_power(power: float, name: str = "poly_power") -> None:
    """Raise unless ``power > 0`` (``(1 - it/T) ** power`` must fall from 1 to 0)."""
    if not power > 0:  # also refuses NaN; a power <= 0 never decays and divides by zero at the end
        raise ValueError(f"{name} must be > 0 (paper: 0.9); got {power}")


class PolyLR(LRScheduler):
    """Polynomial decay per group: ``lr_g = base_lr_g * (1 - it / total_iters) ** power_g``.

    ``power_g`` is the group's ``poly_power`` (set by :func:`build_optimizer`) or ``power``;
    every power must be > 0.
    Call ``step()`` once per iteration; past ``total_iters`` the LR stays at 0.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, power: float = 0.9, last_epoch: int = -1):
        if total_iters < 1:
            raise ValueError(f"total_iters must be >= 1; got {total_iters}")
        check_poly_power(power, "power")
        for group in optimizer.param_groups:
            check_poly_power(group.get("poly_power", power), f"poly_power of group {group.get('name', '?')!r}")
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        frac = 1.0 - min(self.last_epoch, self.total_iters) / self.total_iters
        return [
            base * frac ** group.get("poly_power", self.power)
            for base, group in zip(self.base_lrs, self.optimizer.param_groups)
        ]

"""Exact softmax cross-entropy over all C classes, in chunks, without an N x C tensor."""

from __future__ import annotations

import torch

from esseg.losses._common import check_tau, flatten_pixels, reduce_loss, valid_mask, zero_loss

# Elements of one (rows x classes) logit block: bounds the peak memory independently of C and N.
_BLOCK_ELEMENTS = 1 << 22


def _blocks(n: int, c: int, chunk_size: int | None):
    cc = min(c, chunk_size or 4096)
    rows = max(1, _BLOCK_ELEMENTS // cc)
    return rows, cc


def _logits(x: torch.Tensor, x_sq: torch.Tensor, mu: torch.Tensor, mu_sq: torch.Tensor, tau: float) -> torch.Tensor:
    # z = -(||x||^2 - 2 x.mu + ||mu||^2) / tau, as one matmul.
    return torch.addmm(mu_sq.unsqueeze(0), x, mu.t(), alpha=-2.0).add_(x_sq.unsqueeze(1)).div_(-tau)


class _ChunkedCE(torch.autograd.Function):
    """Per-pixel loss ``logsumexp_c z_ic - z_{i,y_i}``; forward keeps a running log-sum-exp over
    class chunks, backward recomputes each chunk's softmax from the saved (N,) log-sum-exp."""

    @staticmethod
    def forward(ctx, x, mu, y, tau: float, chunk_size):
        n, c = x.shape[0], mu.shape[0]
        rows, cc = _blocks(n, c, chunk_size)
        x_sq, mu_sq = x.pow(2).sum(1), mu.pow(2).sum(1)
        lse = x.new_empty(n)
        for r in range(0, n, rows):
            xr, xr_sq = x[r : r + rows], x_sq[r : r + rows]
            run = xr.new_full((xr.shape[0],), float("-inf"))
            for s in range(0, c, cc):
                z = _logits(xr, xr_sq, mu[s : s + cc], mu_sq[s : s + cc], tau)
                run = torch.logaddexp(run, torch.logsumexp(z, 1))
            lse[r : r + rows] = run
        target = -(x - mu[y]).pow(2).sum(1) / tau
        ctx.save_for_backward(x, mu, y, lse)
        ctx.tau, ctx.chunk_size = tau, chunk_size
        return lse - target

    @staticmethod
    def backward(ctx, grad):
        x, mu, y, lse = ctx.saved_tensors
        tau = ctx.tau
        n, c = x.shape[0], mu.shape[0]
        rows, cc = _blocks(n, c, ctx.chunk_size)
        x_sq, mu_sq = x.pow(2).sum(1), mu.pow(2).sum(1)
        # dl_i/dz_ic = g_i (p_ic - [c = y_i]); dz_ic/dx_i = -2 (x_i - mu_c)/tau; dz_ic/dmu_c = 2 (x_i - mu_c)/tau.
        grad_x = torch.zeros_like(x)
        grad_mu = torch.zeros_like(mu)
        for r in range(0, n, rows):
            xr, g = x[r : r + rows], grad[r : r + rows]
            for s in range(0, c, cc):
                z = _logits(xr, x_sq[r : r + rows], mu[s : s + cc], mu_sq[s : s + cc], tau)
                gp = z.sub_(lse[r : r + rows].unsqueeze(1)).exp_().mul_(g.unsqueeze(1))  # g_i p_ic
                w = gp.sum(1, keepdim=True)
                grad_x[r : r + rows] += (2.0 / tau) * (gp @ mu[s : s + cc] - w * xr)
                grad_mu[s : s + cc] += (2.0 / tau) * (gp.t() @ xr - gp.sum(0).unsqueeze(1) * mu[s : s + cc])
        # the target term -z_{i,y_i}
        diff = x - mu[y]
        grad_x += (2.0 / tau) * grad.unsqueeze(1) * diff
        grad_mu.index_add_(0, y, -(2.0 / tau) * grad.unsqueeze(1) * diff)
        return grad_x, grad_mu, None, None, None


def exact_cross_entropy(
    pixel_embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_embeddings: torch.Tensor,
    tau: float = 0.05,
    ignore_index: int = 255,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Full softmax cross-entropy over all C classes with logits ``-||x - mu||^2 / tau`` (Eq. 5).

    Equals ``F.cross_entropy(-torch.cdist(x, mu) ** 2 / tau, labels, ignore_index=...)`` in value
    and gradients, but never materialises the (N, C) logits: the forward pass keeps a running
    log-sum-exp over chunks of classes, and the backward pass recomputes each chunk. Peak extra
    memory is one (rows x chunk) block (about 16 MiB) plus O(N) vectors, whatever C is.

    Args:
        pixel_embeddings: (B, d, H, W) or (N, d). labels: (B, H, W) or (N,) int64.
        class_embeddings: (C, d). tau: temperature, > 0. ignore_index: label to skip.
        reduction: ``"mean"`` over valid pixels (0 when none), ``"sum"`` or ``"none"``.
        chunk_size: classes per chunk (default 4096; rows per block adapt to keep it bounded).

    Returns:
        Scalar loss (or per-pixel losses in the label shape for ``reduction="none"``).
    """
    check_tau(tau)
    num_classes = class_embeddings.shape[0]
    x, y, shape = flatten_pixels(pixel_embeddings, labels)
    valid = valid_mask(y, num_classes, ignore_index)
    if not valid.any():
        zero = zero_loss(pixel_embeddings, class_embeddings)
        return zero if reduction != "none" else zero + x.new_zeros(shape)
    per_pixel = _ChunkedCE.apply(x[valid], class_embeddings, y[valid], float(tau), chunk_size)
    return reduce_loss(per_pixel, valid, shape, reduction)

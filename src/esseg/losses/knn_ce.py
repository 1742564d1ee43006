"""kNN cross-entropy: softmax over the target class plus k negative classes (paper Eq. 4-6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from esseg.knn import knn_search
from esseg.losses._common import check_tail_samples, check_tau, flatten_pixels, reduce_loss, valid_mask, zero_loss

# Rows processed at once when gathering candidate class embeddings (bounds N x K x d temporaries).
_GATHER_ROWS = 1 << 15


class _CandidateSqDist(torch.autograd.Function):
    """``D[i, j] = ||x_i - mu[cand[i, j]]||^2`` without keeping the gathered (N, K, d) tensor.

    Forward gathers candidate embeddings block by block; backward gathers them again, so the
    graph holds only ``x`` (N, d), ``mu`` (C, d) and ``cand`` (N, K) int64.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mu: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(cand.shape)
        for s in range(0, x.shape[0], _GATHER_ROWS):
            xs = x[s : s + _GATHER_ROWS].unsqueeze(1)
            out[s : s + _GATHER_ROWS] = (xs - mu[cand[s : s + _GATHER_ROWS]]).pow(2).sum(-1)
        ctx.save_for_backward(x, mu, cand)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mu, cand = ctx.saved_tensors
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_mu = torch.zeros_like(mu) if ctx.needs_input_grad[1] else None
        for s in range(0, x.shape[0], _GATHER_ROWS):
            c = cand[s : s + _GATHER_ROWS]
            g = grad[s : s + _GATHER_ROWS].unsqueeze(-1)
            diff = x[s : s + _GATHER_ROWS].unsqueeze(1) - mu[c]  # (n, K, d)
            if grad_x is not None:
                grad_x[s : s + _GATHER_ROWS] = 2.0 * (g * diff).sum(1)
            if grad_mu is not None:
                grad_mu.index_add_(0, c.reshape(-1), (-2.0 * g * diff).reshape(-1, mu.shape[1]))
        return grad_x, grad_mu, None


def candidate_sq_dists(x: torch.Tensor, class_embeddings: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Squared distances from each x_i (N, d) to its candidate classes (N, K) -> (N, K).

    Equals ``((x[:, None] - class_embeddings[candidates]) ** 2).sum(-1)`` in value and gradient.
    """
    return _CandidateSqDist.apply(x, class_embeddings, candidates)


class _BlockSqDist(torch.autograd.Function):
    """Squared distances of the pixels of each block to the block's shared candidates and to
    each pixel's own target, computed as matmuls and without keeping any gathered tensor.

    Inputs: ``x`` (U, P, d) pixels of U blocks, ``mu`` (C, d), ``cand`` (U, K) int64 shared per
    block, ``target`` (U, P) int64 per pixel. Outputs ``(D, D_t)``::

        D[u, p, j] = ||x_up||^2 - 2 x_up . mu_cand[u, j] + ||mu_cand[u, j]||^2      (U, P, K)
        D_t[u, p]  = ||x_up - mu_target[u, p]||^2                                   (U, P)

    Backward gathers the candidate and target embeddings again and scatters class gradients
    with ``index_add_``, so the graph holds only x, mu and the int64 indices.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # fp32 under autocast
    def forward(ctx, x, mu, cand, target):
        u, p, dim = x.shape
        mu_c = mu.index_select(0, cand.reshape(-1)).view(u, -1, dim)  # (U, K, d): freed after forward
        mu_t = mu.index_select(0, target.reshape(-1)).view(u, p, dim)
        # ||mu||^2 of the candidates only: a pass over the whole (C, d) table would cost a (C, d)
        # temporary and O(C d) time at every step.
        d = torch.baddbmm(mu_c.pow(2).sum(-1).unsqueeze(1), x, mu_c.transpose(1, 2), alpha=-2.0)
        d.add_(x.pow(2).sum(-1, keepdim=True))
        d_t = (x - mu_t).pow(2).sum(-1)
        ctx.save_for_backward(x, mu, cand, target)
        return d, d_t

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g, g_t):
        # dD/dx = 2 (x - mu_c), dD/dmu_c = 2 (mu_c - x); the same for D_t with mu_t.
        x, mu, cand, target = ctx.saved_tensors
        u, p, dim = x.shape
        grad_x = grad_mu = None
        if ctx.needs_input_grad[0]:
            mu_c = mu.index_select(0, cand.reshape(-1)).view(u, -1, dim)
            mu_t = mu.index_select(0, target.reshape(-1)).view(u, p, dim)
            g_sum = g.sum(-1, keepdim=True) + g_t.unsqueeze(-1)  # (U, P, 1)
            grad_x = torch.baddbmm(x * g_sum, g, mu_c, alpha=-1.0)
            grad_x.addcmul_(g_t.unsqueeze(-1), mu_t, value=-1.0).mul_(2.0)
        if ctx.needs_input_grad[1]:
            # sum over the pixels using class c of 2 g (mu_c - x) = 2 mu_c w_c - 2 sum g x
            w = mu.new_zeros(mu.shape[0])
            w.index_add_(0, cand.reshape(-1), g.sum(1).reshape(-1)).index_add_(0, target.reshape(-1), g_t.reshape(-1))
            grad_mu = mu * w.mul_(2.0).unsqueeze(1)
            grad_mu.index_add_(0, cand.reshape(-1), torch.bmm(g.transpose(1, 2), x).reshape(-1, dim), alpha=-2.0)
            grad_mu.index_add_(0, target.reshape(-1), (x * g_t.unsqueeze(-1)).reshape(-1, dim), alpha=-2.0)
        return grad_x, grad_mu, None, None


@torch.no_grad()
def knn_negatives(
    queries: torch.Tensor, targets: torch.Tensor, class_embeddings: torch.Tensor, k: int, **search_options
) -> torch.Tensor:
    """The k nearest classes of each query other than its target -> (N, k) int64.

    Searches k+1 neighbours and drops the target where it appears, else the farthest one, so
    every row holds k distinct classes none of which is the target.
    """
    _, idx = knn_search(queries, class_embeddings, k + 1, **search_options)
    return drop_target(idx, targets, k, class_embeddings.shape[0])


def _repeats(idx: torch.Tensor) -> torch.Tensor:
    """Mask of entries equal to an earlier entry of the same row."""
    ordered, order = torch.sort(idx, dim=1, stable=True)
    repeat = torch.zeros_like(idx, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return torch.zeros_like(repeat).scatter_(1, order, repeat)


@torch.no_grad()
def drop_target(idx: torch.Tensor, targets: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """From (N, k+1) neighbours in ascending distance keep k distinct non-target classes.

    Drops the target where present, else the farthest neighbour. Approximate backends may
    return a class twice (when the probed clusters hold too few classes): repeats are dropped
    too and such short rows are topped up with random distinct non-target classes.
    """
    drop = (idx == targets.unsqueeze(1)) | _repeats(idx)
    kept = (~drop).sum(1)
    drop[:, -1] |= kept > k
    short = kept < k
    if not short.any():
        return idx[~drop].view(-1, k)
    out = torch.empty((idx.shape[0], k), dtype=torch.long, device=idx.device)
    out[~short] = idx[~short][~drop[~short]].view(-1, k)
    fill = random_negatives(targets[short], num_classes, k)
    for row, (ids, dropped, extra) in zip(
        torch.nonzero(short).flatten().tolist(), zip(idx[short], drop[short], fill)
    ):
        seen = ids[~dropped].tolist()
        seen += [c for c in extra.tolist() if c not in seen][: k - len(seen)]
        out[row] = torch.tensor(seen, device=idx.device)
    return out


@torch.no_grad()
def random_negatives(
    targets: torch.Tensor, num_classes: int, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k distinct classes per row, uniform over the C-1 classes other than the target -> (N, k).

    Robert Floyd's sampling, vectorised over rows: O(N k^2) time, no (N, C) tensor.
    """
    n, dev = targets.shape[0], targets.device
    picked = torch.empty((n, k), dtype=torch.long, device=dev)
    m = num_classes - 1  # sample from [0, m), then skip over the target
    for step, j in enumerate(range(m - k, m)):
        t = (torch.rand(n, device=dev, generator=generator) * (j + 1)).long().clamp_(max=j)
        dup = (picked[:, :step] == t.unsqueeze(1)).any(1)
        picked[:, step] = torch.where(dup, torch.full_like(t, j), t)
    return picked + (picked >= targets.unsqueeze(1)).long()


@torch.no_grad()
def tail_samples_uniform(rows: int, num_classes: int, m: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """m classes per row drawn uniformly from all C, with replacement -> (rows, m) int64.

    Drawn on the generator's device (the CPU when None) and moved to ``device``, so a CPU
    generator serves CUDA runs too.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(num_classes, (rows, m), generator=generator, device=gen_device).to(device)


def tail_logits(z: torch.Tensor, excluded: torch.Tensor, num_classes: int, m: int) -> torch.Tensor:
    """The drawn classes' terms of the tail estimate, as logits: ``z + log(C / m)`` where the draw
    counts, ``-inf`` where it is ``excluded`` (the pixel's target or one of its kept negatives),
    so that ``exp`` of them sums to ``(C / m) sum_j [s_j in tail] exp(z_{s_j})`` (see knn_cross_entropy)."""
    return z.masked_fill(excluded, float("-inf")) + math.log(num_classes / m)


def _shared_negatives_loss(
    pixel_embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_embeddings: torch.Tensor,
    k: int,
    tau: float,
    ignore_index: int,
    stride: int,
    tail_samples: int = 0,
    generator: torch.Generator | None = None,
    **search_options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 with negatives searched once per stride x stride block and shared by its pixels.

    The block's query is its mean embedding (``avg_pool2d``); its k+1 nearest classes form the
    candidate list. Each pixel then uses its target plus those candidates minus the target
    (or minus the farthest when the target is absent), exactly as the per-pixel path does.
    Logits for a whole block come from one batched matmul against its (k+1, d) candidates,
    so no (N, k+1, d) gather is built or kept. ``tail_samples`` = m > 0 adds m uniform draws
    per block for the tail estimate (:func:`knn_cross_entropy`). Returns the per-pixel loss map
    (B, H, W) (0 at ignored pixels) and the valid mask.
    """
    b, d, h, w = pixel_embeddings.shape
    s = stride
    hp, wp = -(-h // s) * s, -(-w // s) * s
    x = F.pad(pixel_embeddings, (0, wp - w, 0, hp - h))
    y = F.pad(labels, (0, wp - w, 0, hp - h), value=ignore_index)
    hb, wb, p = hp // s, wp // s, s * s
    xb = x.view(b, d, hb, s, wb, s).permute(0, 2, 4, 3, 5, 1).reshape(-1, p, d)  # (blocks, P, d)
    yb = y.view(b, hb, s, wb, s).permute(0, 1, 3, 2, 4).reshape(-1, p)
    vb = yb != ignore_index
    used = torch.nonzero(vb.any(1)).flatten()
    xu, yu, vu = xb[used], yb[used], vb[used]
    queries = F.avg_pool2d(pixel_embeddings.detach(), s, s, ceil_mode=True).permute(0, 2, 3, 1).reshape(-1, d)[used]
    _, cand = knn_search(queries, class_embeddings.detach(), k + 1, **search_options)  # (U, k+1)
    target = torch.where(vu, yu, torch.zeros_like(yu))
    c, kc = class_embeddings.shape[0], cand.shape[1]
    tail = tail_samples > 0 and k < c - 1
    draws = tail_samples_uniform(cand.shape[0], c, tail_samples, cand.device, generator) if tail else None  # (U, m)
    both = torch.cat([cand, draws], 1) if tail else cand
    d2, d2_t = _BlockSqDist.apply(xu, class_embeddings, both, target)  # (U, P, k+1[+m]), (U, P)
    z, z_t = d2[..., :kc] / -tau, d2_t / -tau
    drop = cand.unsqueeze(1) == target.unsqueeze(2)  # (U, P, k+1)
    drop[..., -1] |= ~drop.any(-1)
    drop |= _repeats(cand).unsqueeze(1)  # approximate backends may pad with repeated classes
    z = z.masked_fill(drop, float("-inf"))
    parts = [z_t.unsqueeze(-1), z]
    if tail:
        # a draw counts only when it is in neither the pixel's target nor its kept negatives
        hit = (draws.unsqueeze(2) == cand.unsqueeze(1)).to(z.dtype)  # (U, m, k+1)
        in_kept = torch.bmm((~drop).to(z.dtype), hit.transpose(1, 2)) > 0  # (U, P, m)
        in_kept |= draws.unsqueeze(1) == target.unsqueeze(2)
        parts.append(tail_logits(d2[..., kc:] / -tau, in_kept, c, tail_samples))
    per_pixel = torch.logsumexp(torch.cat(parts, -1), -1) - z_t
    out = per_pixel.new_zeros(yb.shape).index_put((used,), torch.where(vu, per_pixel, 0.0))
    out = out.view(b, hb, wb, s, s).permute(0, 1, 3, 2, 4).reshape(b, hp, wp)[:, :h, :w]
    return out, labels != ignore_index


def knn_cross_entropy(
    pixel_embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_embeddings: torch.Tensor,
    k: int = 7,
    tau: float = 0.05,
    ignore_index: int = 255,
    negatives: str = "knn",
    reduction: str = "mean",
    query_stride: int = 1,
    generator: torch.Generator | None = None,
    tail_samples: int = 0,
    **search_options,
) -> torch.Tensor:
    """Cross-entropy over the target class and k negative classes (paper Eq. 6).

    With logits ``z_ic = -||x_i - mu_c||^2 / tau`` (Eq. 5), each valid pixel i contributes::

        l_i = -z_{i,y_i} + log( exp(z_{i,y_i}) + sum_{n in eta_i} exp(z_{i,n}) )

    where ``eta_i`` holds exactly k distinct classes, never ``y_i``: the k nearest class
    embeddings of x_i other than the target (``negatives="knn"``, searched without gradient)
    or k uniformly drawn other classes (``negatives="random"``, the Table 2 ablation).
    ``k >= C-1`` uses every other class, so the loss equals full softmax cross-entropy.

    ``tail_samples`` = m > 0 (kNN negatives only) adds an estimate of the softmax mass of the
    classes outside ``{y_i} + eta_i`` (the *tail*), which Eq. 6 drops. With m classes ``s_j``
    drawn uniformly from all C (per pixel, or per block when ``query_stride > 1``)::

        l_i = -z_{i,y_i} + log( exp(z_{i,y_i}) + sum_{n in eta_i} exp(z_{i,n})
                                + (C / m) sum_j [s_j not in {y_i} + eta_i] exp(z_{i,s_j}) )

    The last sum is an unbiased estimate of ``sum_{c in tail} exp(z_ic)``, so the argument of the
    log is unbiased for the full softmax's partition function (whose log the exact loss takes).
    It matters while the logits are soft: then a pixel's k nearest classes hold a small part of
    its softmax mass and Eq. 6 under-weights the pull towards the target. m = 0 is the paper's.

    Args:
        pixel_embeddings: (B, d, H, W) or (N, d), used as given (normalise in the model).
        labels: (B, H, W) or (N,) int64 in [0, C) or ``ignore_index``.
        class_embeddings: (C, d).
        k: negatives per pixel. tau: temperature, > 0.
        ignore_index: label value to skip; ignored pixels are dropped before any search.
        negatives: ``"knn"`` or ``"random"``.
        reduction: ``"mean"`` over valid pixels (0 when none), ``"sum"`` or ``"none"``
            (per-pixel loss in the label shape, 0 at ignored pixels).
        query_stride: search negatives once per s x s block (on the block's mean embedding)
            and share them across the block's pixels; 1 searches every pixel. Needs 4-D input;
            applies to ``negatives="knn"``. s = 4 searches at the resolution of a DeepLabV3+
            decoder, whose output is upsampled 4x.
        generator: RNG for ``negatives="random"`` and the tail draws (None: torch's default CPU RNG).
        tail_samples: m uniform draws for the tail estimate (above); 0 = off (the paper's Eq. 6).
        **search_options: passed to :func:`esseg.knn.knn_search` (``backend=``, ...).

    Returns:
        Scalar loss (or per-pixel losses for ``reduction="none"``).
    """
    num_classes = class_embeddings.shape[0]
    if num_classes < 2:
        raise ValueError(f"knn_cross_entropy needs at least 2 classes; got C={num_classes}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    check_tau(tau)
    if negatives not in ("knn", "random"):
        raise ValueError(f"negatives must be 'knn' or 'random'; got {negatives!r}")
    if query_stride < 1 or (query_stride > 1 and pixel_embeddings.dim() != 4):
        raise ValueError(f"query_stride={query_stride} needs 4-D (B,d,H,W) embeddings and must be >= 1")
    x, y, shape = flatten_pixels(pixel_embeddings, labels)
    valid = valid_mask(y, num_classes, ignore_index)
    check_tail_samples(tail_samples, negatives)
    k = min(k, num_classes - 1)
    if valid.any() and negatives == "knn" and query_stride > 1:
        per_pixel, valid = _shared_negatives_loss(
            pixel_embeddings, labels, class_embeddings, k, tau, ignore_index, query_stride,
            tail_samples=tail_samples, generator=generator, **search_options
        )
        return reduce_loss(per_pixel[valid], valid.reshape(-1), shape, reduction)
    if not valid.any():
        zero = zero_loss(pixel_embeddings, class_embeddings)
        return zero if reduction != "none" else zero + x.new_zeros(shape)
    xv, yv = x[valid], y[valid]
    if negatives == "random":
        neg = random_negatives(yv, num_classes, k, generator=generator)
    else:
        neg = knn_negatives(xv.detach(), yv, class_embeddings.detach(), k, **search_options)
    candidates = torch.cat([yv.unsqueeze(1), neg], 1)  # target first
    kc = candidates.shape[1]
    tail = tail_samples > 0 and k < num_classes - 1
    if tail:
        draws = tail_samples_uniform(xv.shape[0], num_classes, tail_samples, xv.device, generator)  # (N, m)
        ordered = candidates.sort(1).values
        pos = torch.searchsorted(ordered, draws).clamp_(max=kc - 1)
        in_kept = ordered.gather(1, pos) == draws  # the draw is the target or a kept negative
        candidates = torch.cat([candidates, draws], 1)
    logits = candidate_sq_dists(xv, class_embeddings, candidates).div(-tau)
    if tail:
        logits = torch.cat([logits[:, :kc], tail_logits(logits[:, kc:], in_kept, num_classes, tail_samples)], 1)
    per_pixel = torch.logsumexp(logits, 1) - logits[:, 0]
    return reduce_loss(per_pixel, valid, shape, reduction)


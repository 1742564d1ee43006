"""Wrappers that turn any dense network into an ESS model or a C-logit baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from esseg.errors import ConfigError, NonFiniteError
from esseg.knn import EXACT_BACKENDS, knn_search, resolve_backend


# Rows per chunk of :func:`unit_rows`' backward pass: bounds its temporaries (~3 MiB at d = 12).
UNIT_ROWS_CHUNK = 1 << 16


def unit_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``y = x / max(||x||, eps)`` along dim 1: ``F.normalize(x, dim=1)``, same values.

    For the (C, d) class table and for (B, d, H, W) pixel embeddings. With a gradient to
    compute, the backward pass ``dx = (g - y (y . g)) / n`` (``g / eps`` where the norm is
    clamped) runs over chunks of the first dimension into one buffer the size of ``x``, where
    autograd through ``F.normalize`` makes five temporaries that size (230 MiB for the table at
    C = 10^6, d = 12: part of a million-class training step's peak). Only ``x`` and the norms
    are saved. Without a gradient (inference, export) it is the plain expression.
    """
    if not (torch.is_grad_enabled() and x.requires_grad) or x.dim() < 2:
        return F.normalize(x, dim=1, eps=eps)
    return _UnitNorm.apply(x, eps)


class _UnitNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        norms = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(eps)
        ctx.save_for_backward(x, norms)
        ctx.eps = eps
        return x / norms

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, norms = ctx.saved_tensors
        out = torch.empty_like(x)
        rows = max(1, UNIT_ROWS_CHUNK * x.shape[1] // max(1, x[:1].numel()))  # ~UNIT_ROWS_CHUNK rows of d numbers
        for s in range(0, x.shape[0], rows):
            e = min(x.shape[0], s + rows)
            n, g = norms[s:e], grad[s:e]
            y = x[s:e] / n
            dot = (y * g).sum(1, keepdim=True).masked_fill_(n <= ctx.eps, 0.0)  # a clamped norm passes no gradient
            out[s:e] = (g - y * dot) / n
        return out, None


def _upsample(out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if out.shape[-2:] == tuple(size):
        return out
    return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def input_multiple(net: nn.Module) -> int:
    """The multiple of H and W that ``net`` needs: its encoder's output stride for
    segmentation_models_pytorch networks (16 for DeepLabV3+ at output stride 16, 32 for U-Net,
    FPN, ...), 1 for a network without ``encoder.output_stride`` or that takes any size."""
    if not getattr(net, "requires_divisible_input_shape", True):
        return 1
    return max(1, int(getattr(getattr(net, "encoder", None), "output_stride", 1) or 1))


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom and right to H', W' = the next multiples of ``multiple``.

    Zero is the mean of normalised images. Written with sizes read from ``images`` only, so it
    traces and exports with dynamic height and width.
    """
    h, w = images.shape[-2], images.shape[-1]
    return F.pad(images, (0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple))


def forward_any_size(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` for images of any H, W: pad to ``model.input_multiple``, run, crop back.

    ``(B, 3, H, W) -> (B, channels, H, W)``; equals ``model(pad_to_multiple(images, m))[..., :H, :W]``.
    The one padding path of prediction: ``predict``, ``predict_topk`` and the exported graph
    (:class:`esseg.export.LabelMapModel`) call it.
    """
    h, w = images.shape[-2], images.shape[-1]
    return model(pad_to_multiple(images, model.input_multiple))[:, :, :h, :w]


def _split_params(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    backbone = list(net.encoder.parameters()) if isinstance(getattr(net, "encoder", None), nn.Module) else []
    ids = {id(p) for p in backbone}
    return {"backbone": backbone, "head": [p for p in net.parameters() if id(p) not in ids]}


CLASS_INITS = ("random", "spread")
SPREAD_MAX_ROWS = 4096  # spread_rows costs O(C^2 d) per step


def spread_rows(num_rows: int, dim: int, steps: int = 100, sharpness: float = 10.0, lr: float = 0.5) -> torch.Tensor:
    """``num_rows`` unit vectors in R^dim spread out on the sphere (draws from torch's global RNG).

    ``num_rows <= dim``: orthonormal rows (QR of a Gaussian matrix; every cosine is 0).
    Otherwise, from Gaussian rows, ``steps`` Riemannian gradient steps of size ``lr`` on the sum
    over rows of each row's smooth maximum cosine to the others,
    ``E = sum_i logsumexp_{j != i}(sharpness * cos_ij) / sharpness``, renormalising after each
    step (a repulsion that pushes each row away from its nearest rows). At C = 200, d = 64 it
    lowers the mean nearest-neighbour cosine from 0.34 (Gaussian rows) to 0.12.

    Returns:
        (num_rows, dim) float32, unit-length rows.

    Raises:
        ConfigError: ``num_rows > SPREAD_MAX_ROWS`` above ``dim`` (the C x C cosines are too costly).
    """
    if num_rows <= dim:
        q, r = torch.linalg.qr(torch.randn(dim, num_rows))
        return (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)).t().contiguous()
    if num_rows > SPREAD_MAX_ROWS:
        raise ConfigError(f"model.class_init=spread supports at most {SPREAD_MAX_ROWS} classes above embedding_dim "
                          f"(it compares all C x C pairs); got C = {num_rows}; use model.class_init=random")
    rows = F.normalize(torch.randn(num_rows, dim), dim=1)
    self_pairs = torch.eye(num_rows, dtype=torch.bool)
    with torch.enable_grad():
        for _ in range(steps):
            x = rows.clone().requires_grad_(True)
            cos = (x @ x.t()).masked_fill(self_pairs, -math.inf)
            (grad,) = torch.autograd.grad(torch.logsumexp(sharpness * cos, dim=1).sum() / sharpness, x)
            grad = grad - (grad * rows).sum(1, keepdim=True) * rows  # tangent to the sphere
            rows = F.normalize(rows - lr * grad, dim=1)
    return rows


def check_finite(values: torch.Tensor, what: str) -> None:
    """Raise :class:`~esseg.errors.NonFiniteError` if ``values`` hold NaN or inf (one check, one sync)."""
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise NonFiniteError(
            f"the model's {what} hold NaN or inf ({bad} of {values.numel()} values): its weights are not finite "
            "(training diverged?); use an earlier checkpoint or retrain with a lower optim.lr"
        )


@torch.no_grad()
def nearest_class(
    pixel_embeddings: torch.Tensor, class_embeddings: torch.Tensor, chunk_size: int | None = None, k: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Label of the nearest class embedding of each pixel (squared L2), in blocks.

    ``label_i = argmin_c ||x_i - mu_c||^2``; with ``k > 1`` the k nearest, ascending.

    Args:
        pixel_embeddings: (B, d, H, W) or (N, d). class_embeddings: (C, d).
        chunk_size: pixels per search block (default: bounded by the search's block size).
        backend: kNN backend (:func:`esseg.knn.knn_search`): ``"auto"`` searches exactly below
            ``AUTO_INDEX_MIN_CLASSES`` classes and with the inverted-file index above (built once
            per class table and cached until the table changes); ``"torch"`` is always exact.

    Returns:
        (B, H, W) or (N,) int64 labels; with k > 1, (B, k, H, W) or (N, k).

    Raises:
        NonFiniteError: an embedding holds NaN or inf (a diverged model); a label would be arbitrary.
    """
    four_d = pixel_embeddings.dim() == 4
    x = pixel_embeddings.permute(0, 2, 3, 1).reshape(-1, pixel_embeddings.shape[1]) if four_d else pixel_embeddings
    x = x.to(class_embeddings.dtype)
    check_finite(class_embeddings, "class embeddings")
    check_finite(x, "pixel embeddings")
    step = chunk_size or x.shape[0] or 1
    idx = torch.cat([knn_search(x[s : s + step], class_embeddings, k, backend=backend)[1] for s in range(0, x.shape[0], step)] or [
        torch.empty((0, k), dtype=torch.long, device=x.device)
    ])
    if not four_d:
        return idx[:, 0] if k == 1 else idx
    b, _, h, w = pixel_embeddings.shape
    idx = idx.view(b, h, w, k).permute(0, 3, 1, 2)
    return idx[:, 0] if k == 1 else idx


@torch.no_grad()
def search_agreement(
    pixel_embeddings: torch.Tensor, class_embeddings: torch.Tensor, backend: str = "auto", sample: int = 4096
) -> float | None:
    """Top-1 agreement of ``backend`` with exact search on ``sample`` evenly spaced pixels.

    ``mean_i [nearest_class(x_i; backend) == argmin_c ||x_i - mu_c||^2 in float64]``; None when
    ``backend`` resolves to exact search at this C (nothing to compare).
    """
    if resolve_backend(class_embeddings.shape[0], backend, class_embeddings.device, class_embeddings.dtype) in EXACT_BACKENDS:
        return None
    d = pixel_embeddings.shape[1]
    x = pixel_embeddings.permute(0, 2, 3, 1).reshape(-1, d) if pixel_embeddings.dim() == 4 else pixel_embeddings
    x = x[torch.linspace(0, x.shape[0] - 1, min(sample, x.shape[0]), device=x.device).long()]
    fast = nearest_class(x, class_embeddings, backend=backend)
    # The reference is exact search in float64: float32 exact search itself can swap near-ties
    # (a random-init network gives every pixel nearly the same embedding, so one tie flips all).
    exact = nearest_class(x.double(), class_embeddings.double(), backend="torch")
    return float((fast == exact).float().mean())


class EmbeddingSegmenter(nn.Module):
    """An ESS model: ``net`` outputs d-dim pixel embeddings; (C, d) class embeddings hold classes.

    ``forward`` upsamples the net's (B, d, h, w) output to the input size and then, with
    ``normalize=True``, L2-normalises it along d (after upsampling, so the loss sees unit
    vectors: Sec. 3.1). Class embeddings are normalised the same way. A pixel's label is its
    nearest class embedding.

    The class embeddings are a learned free table (``class_encoder=None``, the paper's) or
    computed by a class encoder from class descriptions (:mod:`esseg.models.class_encoders`).
    Without gradients (inference) the computed table is cached and recomputed only when a
    parameter of the encoder changed (optimiser step, ``load_state_dict``, a move to another device).

    With ``unit_pixels=False`` (and ``normalize=True``) only the class embeddings are unit length;
    a pixel's embedding keeps its length ``r = ||x||``, so the loss's logits
    ``-||x - mu||^2 / tau = (2 r cos(x, mu) - r^2 - 1) / tau`` are a cosine classifier with a learned
    per-pixel scale ``2 r / tau`` (the ``- r^2 - 1`` is the same for every class and cancels in the
    softmax), where unit pixels fix it at ``2 / tau``. The nearest class is still the one of largest
    cosine, so the kNN search, the max-margin term and prediction are unchanged.

    With ``learn_temperature=True`` the model also holds the loss's temperature as a learned
    log-scale ``log_scale = s`` (NormFace / CLIP style): ``tau = exp(-min(s, log(max_scale)))``,
    so the loss's logits ``-||x - mu||^2 / tau = exp(s) (2 cos(x, mu) - 2)`` for unit vectors;
    ``s`` starts at ``log(1 / tau)`` and :meth:`temperature` gives the tensor the engine passes
    to the loss (gradients reach ``s``; none beyond the bound).

    Args:
        net: any module mapping images (B, 3, H, W) to (B, embedding_dim, h, w).
        num_classes: C. embedding_dim: d. normalize: project both onto the unit sphere.
        unit_pixels: with ``normalize``, project the pixel embeddings too (the paper's); False:
            class embeddings only (above).
        class_encoder: None (a free table) or a module whose ``forward()`` gives the raw (C, d)
            rows and ``forward(descriptions)`` the rows of new classes.
        class_init: the free table's initial rows: ``"random"`` (Gaussian, the paper's) or
            ``"spread"`` (:func:`spread_rows`: spread out on the sphere).
        learn_temperature: learn ``tau`` (above). tau: its initial value, > 0.
        max_scale: upper bound of ``1 / tau`` (None: unbounded).
        max_pixel_length: with ``unit_pixels=False``, an upper bound R on the pixel lengths:
            ``x <- x * min(1, R / ||x||)`` (the logits' per-pixel scale ``2 r / tau`` then stays
            at most ``2 R / tau``; None: unbounded).

    Shapes:
        forward: (B, 3, H, W) -> pixel_embeddings (B, d, H, W), H and W multiples of ``input_multiple``
        class_embeddings(): (C, d); predict: (B, 3, H, W) of any H, W -> (B, H, W) int64
    """

    is_embedding = True

    def __init__(self, net: nn.Module, num_classes: int, embedding_dim: int, normalize: bool = True,
                 unit_pixels: bool = True, class_encoder: nn.Module | None = None, class_init: str = "random", learn_temperature: bool = False,
                 tau: float = 0.05, max_scale: float | None = None, max_pixel_length: float | None = None):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1; got {embedding_dim}")
        if class_init not in CLASS_INITS:
            raise ConfigError(f"class_init must be one of {', '.join(CLASS_INITS)}; got {class_init!r}")
        if learn_temperature and not (tau > 0 and (max_scale is None or max_scale >= 1 / tau)):
            raise ConfigError(f"a learned temperature needs tau > 0 and max_scale >= 1 / tau (or null); got tau={tau}, "
                              f"max_scale={max_scale}")
        self.net = net
        if not unit_pixels and not normalize:
            raise ConfigError("unit_pixels=False keeps the pixel embeddings' length while the class embeddings are "
                              "normalised; it needs normalize=True (for no normalisation at all, pass unit_pixels=True)")
        if max_pixel_length is not None and (unit_pixels or not normalize or not max_pixel_length > 0):
            raise ConfigError(f"max_pixel_length={max_pixel_length} bounds free pixel lengths: it needs normalize=True, "
                              f"unit_pixels=False and a value > 0 (got normalize={normalize}, unit_pixels={unit_pixels})")
        self.num_classes, self.embedding_dim, self.normalize = num_classes, embedding_dim, normalize
        self.unit_pixels, self.max_pixel_length = unit_pixels, max_pixel_length
        if class_encoder is None:
            if class_init == "spread":
                table = spread_rows(num_classes, embedding_dim)
                self.class_table = nn.Parameter(table)  # unit rows (random rows / sqrt(d) have norm ~1 too)
            else:
                table = torch.randn(num_classes, embedding_dim)
                self.class_table = nn.Parameter(F.normalize(table, dim=1) if normalize else table / math.sqrt(embedding_dim))
        self.class_encoder = class_encoder
        self.learn_temperature, self.max_scale = learn_temperature, max_scale
        if learn_temperature:
            self.log_scale = nn.Parameter(torch.tensor(math.log(1 / tau)))
        self._cache: tuple | None = None  # (parameter versions, table) of the last no-grad class_embeddings()
        self.config: dict = {}

    @property
    def class_table(self) -> torch.Tensor:
        """The raw (C, d) class rows before normalisation: the free table, or what the encoder computes."""
        table = self._parameters.get("class_table")
        return table if table is not None else self.class_encoder()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = _upsample(self.net(images), images.shape[-2:])
        if out.shape[1] != self.embedding_dim:
            raise ValueError(f"net returned {out.shape[1]} channels; expected embedding_dim={self.embedding_dim}")
        if self.normalize and self.unit_pixels:
            return unit_rows(out)
        if self.max_pixel_length is not None:  # x * min(1, R / ||x||): direction kept, length at most R
            r = torch.linalg.vector_norm(out, dim=1, keepdim=True)
            out = out * (self.max_pixel_length / r.clamp_min(self.max_pixel_length))
        return out

    def class_embeddings(self, descriptions=None) -> torch.Tensor:
        """The (C, d) class embeddings, unit length when ``normalize=True``.

        Args:
            descriptions: ``None`` for the training classes, or a new class list for a model with a
                class encoder (label-set swap): C' attribute token lists (``attributes``) or a
                (C', D) text-feature matrix (``text``); gives (C', d).

        Raises:
            ConfigError: ``descriptions`` for a free-table model (it cannot embed new classes), an
                unknown attribute token, text features of another width.
        """
        if descriptions is not None:
            if self.class_encoder is None:
                raise ConfigError("this model has a free class table (model.class_encoder=table) and cannot embed new "
                                  "classes; only attributes/text class encoders can (retrain with model.class_encoder=attributes)")
            return self._normalized(self.class_encoder(descriptions))
        if torch.is_grad_enabled() or self.class_encoder is None:
            return self._normalized(self.class_table)
        key = tuple((p.data_ptr(), p._version) for p in self.class_encoder.parameters()) + tuple(
            (b.data_ptr(), b._version) for b in self.class_encoder.buffers())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._normalized(self.class_encoder()))
        return self._cache[1]

    def temperature(self) -> torch.Tensor | None:
        """The learned temperature, a 0-dim tensor ``exp(-min(log_scale, log(max_scale)))``; None
        when ``learn_temperature=False`` (the loss then uses its own fixed ``tau``)."""
        if not self.learn_temperature:
            return None
        s = self.log_scale if self.max_scale is None else self.log_scale.clamp(max=math.log(self.max_scale))
        return torch.exp(-s)

    def _normalized(self, rows: torch.Tensor) -> torch.Tensor:
        return unit_rows(rows) if self.normalize else rows

    @property
    def input_multiple(self) -> int:
        """H and W of ``forward``'s input must be multiples of this (:func:`input_multiple` of ``net``)."""
        return input_multiple(self.net)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, class_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) of any H, W -> (B, H, W) int64: each pixel's nearest class embedding.

        ``label = argmin_c ||x - mu_c||^2`` on ``x = forward_any_size(self, images)`` (padded to
        :attr:`input_multiple`, cropped back). ``class_embeddings`` (C', d) replaces the model's
        own (a label-set swap, e.g. from ``class_embeddings(descriptions)``); labels then index its
        rows. Raises :class:`~esseg.errors.NonFiniteError` when the embeddings hold NaN/inf (a
        diverged model).
        """
        table = self.class_embeddings() if class_embeddings is None else class_embeddings
        return nearest_class(forward_any_size(self, images), table)

    @torch.no_grad()
    def predict_topk(self, images: torch.Tensor, k: int = 5) -> torch.Tensor:
        """(B, 3, H, W) of any H, W -> (B, k, H, W) int64: the k nearest classes per pixel, nearest first."""
        return nearest_class(forward_any_size(self, images), self.class_embeddings(), k=k)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimiser group: ``backbone`` (``net.encoder``), ``head``, ``class_embeddings``
        (the free table, or all parameters of the class encoder), ``temperature`` (``log_scale``, if learned)."""
        table = self._parameters.get("class_table")
        classes = [table] if table is not None else list(self.class_encoder.parameters())
        groups = {**_split_params(self.net), "class_embeddings": classes}
        return {**groups, "temperature": [self.log_scale]} if self.learn_temperature else groups


class BaselineSegmenter(nn.Module):
    """The C-logit baseline with the same interface: ``forward`` gives (B, C, H, W) logits.

    Args:
        net: any module mapping images (B, 3, H, W) to (B, num_classes, h, w).
        num_classes: C.
    """

    is_embedding = False
    embedding_dim = None

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net, self.num_classes = net, num_classes
        self.config: dict = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _upsample(self.net(images), images.shape[-2:])

    @property
    def input_multiple(self) -> int:
        """H and W of ``forward``'s input must be multiples of this (:func:`input_multiple` of ``net``)."""
        return input_multiple(self.net)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) of any H, W -> (B, H, W) int64: ``argmax_c`` of the logits of
        :func:`forward_any_size` (NonFiniteError on NaN/inf logits)."""
        logits = forward_any_size(self, images)
        check_finite(logits, "logits")
        return logits.argmax(1)

    @torch.no_grad()
    def predict_topk(self, images: torch.Tensor, k: int = 5) -> torch.Tensor:
        """(B, 3, H, W) of any H, W -> (B, k, H, W) int64: the k highest-scoring classes per pixel."""
        logits = forward_any_size(self, images)
        check_finite(logits, "logits")
        return logits.topk(k, dim=1).indices

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimiser group: ``backbone`` (``net.encoder``) and ``head``."""
        return {**_split_params(self.net), "class_embeddings": []}

"""Thin ``nn.Module`` wrappers that store loss options and call the functional losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esseg.knn import resolve_backend
from esseg.knn.index import RefreshedIndex
from esseg.losses._common import check_tail_samples, check_tau, valid_mask, zero_loss
from esseg.losses.exact_ce import exact_cross_entropy
from esseg.losses.knn_ce import knn_cross_entropy
from esseg.losses.margin import max_margin_loss, nearest_other

MODES = ("knn", "random", "exact")


class ESSLoss(nn.Module):
    """The ESS training loss: classification cross-entropy + ``reg_weight`` x max-margin term.

    ``L = CE(pixel_embeddings, labels, class_embeddings) + reg_weight * L_r(class_embeddings)``
    (Algorithm 1, line 8), where CE is :func:`knn_cross_entropy` (``mode="knn"``, Eq. 6, or
    ``mode="random"``, the random-negatives ablation) or :func:`exact_cross_entropy`
    (``mode="exact"``, Eq. 5 over all classes), and ``L_r`` is :func:`max_margin_loss` (Eq. 7).

    After each call ``self.terms`` holds the detached terms ``{"ce", "reg"}`` for logging; when
    the kNN search uses the training index (``backend="auto"`` at C >= 25,000, or ``"ivf"``) also
    ``knn_recall`` (recall@k of the searched neighbours against exact search, measured on 256
    queries at each refresh and one step before the next) and ``index_build_s`` (seconds of the
    last partition build; amortised over ``index_refresh_every`` steps).

    Args:
        k: negatives per pixel (knn/random). tau: temperature, > 0 (paper: 0.05); ``forward(...,
            tau=t)`` replaces it with a tensor (a learned temperature).
        margin: max-margin m (paper: 0.5). reg_weight: weight of L_r (0 disables it).
        ignore_index: label to skip. mode: ``"knn"``, ``"random"`` or ``"exact"``.
        query_stride: search kNN negatives once per s x s pixel block and share them in the
            block (1 = every pixel, as in the paper). The default 4 searches at the resolution
            of a DeepLabV3+ decoder, whose output is bilinearly upsampled 4x, at 1/16 of the
            search cost; negatives stay the k nearest *other* classes of the block. (N, d)
            inputs have no blocks and always search per pixel.
        chunk_size: class chunk of the exact mode.
        reg_refresh_every: recompute each class's ``reg_candidates`` nearest other classes
            every this many training calls and take Eq. 7's minimum over them in between
            (exact at refresh steps; O(C m d) per step instead of a C x C scan). ``None``
            (default) = every call for C <= 4096, every 16 calls above. Eval mode always
            searches exactly. The call counter and the candidates are part of ``state_dict()``
            (checkpoint it with the model, so a resumed run refreshes at the same calls).
        index_refresh_every: steps between rebuilds of the training index's k-means partition
            (:class:`~esseg.knn.index.RefreshedIndex`; its vectors and centroids follow the table
            at every step). Above 4096 classes the regulariser's candidates are refreshed on the
            same steps when the index is used. index_seed: the partition's k-means seed.
        tail_samples: m > 0 adds m uniformly drawn classes per pixel (per block with
            ``query_stride > 1``) that estimate the softmax mass beyond the k nearest classes
            (:func:`knn_cross_entropy`'s ``tail_samples``; kNN mode only; 0 = the paper's Eq. 6).
            The draws of training call t come from a generator seeded with ``(index_seed, t)``,
            so a resumed run draws the same classes.
        reg_candidates: candidates m per class between refreshes (default: 8; 1 when the
            training index is used, where each extra candidate costs a (C, d) gather per step:
            0.65 s at C = 10^6 for m = 8 on one CPU thread).
        **search_options: kNN search options: ``backend="auto"`` (default: exact below
            :data:`esseg.knn.AUTO_INDEX_MIN_CLASSES` classes, the training index above),
            ``"torch"``, ``"ivf"``, ``"faiss"``, ...; ``nlist=``, ``nprobe=``.

    Shapes:
        forward(pixel_embeddings (B,d,H,W) or (N,d), labels (B,H,W) or (N,), class_embeddings (C,d)) -> scalar
    """

    def __init__(
        self,
        k: int = 7,
        tau: float = 0.05,
        margin: float = 0.5,
        reg_weight: float = 1.0,
        ignore_index: int = 255,
        mode: str = "knn",
        query_stride: int = 4,
        chunk_size: int | None = None,
        reg_refresh_every: int | None = None,
        reg_candidates: int | None = None,
        index_refresh_every: int = 100,
        index_seed: int = 0,
        tail_samples: int = 0,
        **search_options,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"ESSLoss mode must be one of {', '.join(MODES)}; got {mode!r}")
        check_tau(tau)
        check_tail_samples(tail_samples, mode, "mode")
        self.tail_samples, self.index_seed = tail_samples, index_seed
        self._tail_generator = torch.Generator()
        self.k, self.tau, self.margin, self.reg_weight = k, tau, margin, reg_weight
        self.ignore_index, self.mode, self.query_stride, self.chunk_size = ignore_index, mode, query_stride, chunk_size
        self.reg_refresh_every, self.reg_candidates = reg_refresh_every, reg_candidates
        self.search_options = search_options
        resolve_backend(2, search_options.get("backend", "auto"))  # an unknown name fails here, not mid-training
        self.index = RefreshedIndex(index_refresh_every, search_options.get("nlist"), search_options.get("nprobe"), index_seed)
        self.terms: dict[str, torch.Tensor] = {}
        self._reg_cache: torch.Tensor | None = None
        self._calls = 0

    def search_backend(self, num_classes: int, device: torch.device | str | None = None) -> str:
        """The kNN backend used at ``num_classes`` classes on ``device`` (None: the CPU; ``"ivf"``:
        the training index), see :func:`esseg.knn.resolve_backend`."""
        return resolve_backend(num_classes, self.search_options.get("backend", "auto"), device)

    def forward(self, pixel_embeddings: torch.Tensor, labels: torch.Tensor, class_embeddings: torch.Tensor,
                tau: torch.Tensor | None = None) -> torch.Tensor:
        """The loss (above) with ``self.tau``, or with ``tau``: a 0-dim tensor that replaces it for
        this call (a learned temperature, :meth:`EmbeddingSegmenter.temperature`; gradients reach it).
        The exact mode then computes Eq. 5 on ``x / sqrt(tau)``, ``mu / sqrt(tau)`` with
        temperature 1, which is the same: ``-||x - mu||^2 / tau = -||x/sqrt(tau) - mu/sqrt(tau)||^2``."""
        if tau is None:
            tau = self.tau
        elif tau.dim() != 0:
            raise ValueError(f"tau must be a float or a 0-dim tensor; got shape {tuple(tau.shape)}")
        c = class_embeddings.shape[0]
        uses_index = self.mode != "exact" and self.search_backend(c, class_embeddings.device) == "ivf"
        if uses_index:
            if self.training:
                self.index.step(class_embeddings.detach(), self._calls)
            search = {"index": self.index}
        else:
            search = self.search_options
        if self.mode == "exact" and isinstance(tau, torch.Tensor):
            scale = tau.to(pixel_embeddings.dtype).rsqrt()
            ce = exact_cross_entropy(
                pixel_embeddings * scale, labels, class_embeddings * scale.to(class_embeddings.dtype), tau=1.0,
                ignore_index=self.ignore_index, chunk_size=self.chunk_size,
            )
        elif self.mode == "exact":
            ce = exact_cross_entropy(
                pixel_embeddings, labels, class_embeddings, tau=tau,
                ignore_index=self.ignore_index, chunk_size=self.chunk_size,
            )
        else:
            tail = {}
            if self.tail_samples:
                self._tail_generator.manual_seed(self.index_seed * 1_000_003 + self._calls + (0 if self.training else 1 << 40))
                tail = {"tail_samples": self.tail_samples, "generator": self._tail_generator}
            ce = knn_cross_entropy(
                pixel_embeddings, labels, class_embeddings, k=self.k, tau=tau,
                ignore_index=self.ignore_index, negatives=self.mode,
                query_stride=self.query_stride if pixel_embeddings.dim() == 4 else 1,
                **tail, **search,
            )
        reg = self._regulariser(class_embeddings, search, uses_index) if self.reg_weight else ce.new_zeros(())
        self.terms = {"ce": ce.detach(), "reg": reg.detach()}
        if isinstance(tau, torch.Tensor):
            self.terms["tau"] = tau.detach()
        if uses_index:
            self.terms.update(knn_recall=self.index.recall, index_build_s=self.index.build_s)
        if self.training:
            self._calls += 1
        return ce + self.reg_weight * reg

    def _regulariser(self, class_embeddings: torch.Tensor, search: dict, uses_index: bool) -> torch.Tensor:
        c = class_embeddings.shape[0]
        every = self.reg_refresh_every or (1 if c <= 4096 else self.index.refresh_every if uses_index else 16)
        if every == 1 or not self.training:
            return max_margin_loss(class_embeddings, self.margin, **search)
        cache = self._reg_cache
        if cache is None or cache.shape[0] != c or self._calls % every == 0:
            if uses_index:  # a class's nearest others almost always share its k-means list
                m = self.reg_candidates or 1
                cache = self.index.neighbours_within_lists(m, class_embeddings.detach())
            else:
                cache = nearest_other(class_embeddings.detach(), m=self.reg_candidates or 8, **search).view(c, -1)
        if uses_index and cache.shape[1] == 1 and c < 2**31:
            cache = cache.to(torch.int32)  # one candidate per class at large C: half the bytes of int64
        self._reg_cache = cache = cache.to(class_embeddings.device)  # a resumed cache arrives on the CPU
        return max_margin_loss(class_embeddings, self.margin, neighbours=cache)

    def get_extra_state(self) -> dict:
        """The refresh state, saved in ``state_dict()`` so a resumed run stays exact:
        ``{"calls": training calls so far, "reg_cache": (C, m) int64 candidates or None,
        "index": the training index's partition (:meth:`RefreshedIndex.state`)}``."""
        return {"calls": self._calls, "reg_cache": self._reg_cache, "index": self.index.state()}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved (the index is rebuilt from its saved partition)."""
        self._calls, self._reg_cache = int(state["calls"]), state["reg_cache"]
        if state.get("index") is not None:
            self.index.load(state["index"])

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, k={self.k}, tau={self.tau}, margin={self.margin}, "
            f"reg_weight={self.reg_weight}, ignore_index={self.ignore_index}, query_stride={self.query_stride}"
            + (f", tail_samples={self.tail_samples}" if self.tail_samples else "")
        )


class SoftmaxCrossEntropyLoss(nn.Module):
    """The baseline's loss: ``F.cross_entropy`` on (B, C, H, W) logits, mean over valid pixels.

    Same call signature as :class:`ESSLoss` so one training loop serves both;
    ``class_embeddings`` is accepted and ignored. Labels are range-checked like ESS's, and a
    batch with no valid pixel gives 0 (not NaN). ``self.terms`` holds ``{"ce"}``.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index
        self.terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, class_embeddings: torch.Tensor | None = None):
        valid = valid_mask(labels, logits.shape[1], self.ignore_index)
        if valid.any():
            ce = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        else:
            ce = zero_loss(logits)
        self.terms = {"ce": ce.detach()}
        return ce

"""Class encoders: the (C, d) class embeddings computed from class descriptions.

An ESS model classifies a pixel by its nearest class embedding. With ``class_encoder="table"``
(the default) each class has a free learned row. The encoders here instead *compute* the rows
from a description of each class, so classes share what their descriptions share, and a class
that never occurred in training (or is new at test time) still gets an embedding:

* ``attributes``: class ``c`` is a set of tokens ``T_c`` (e.g. ``shape:U+25A0 pattern:solid
  colour:red``); ``mu_c = MLP(reduce_{t in T_c} E[t]) + R[c]`` with learned token embeddings
  ``E`` (V, h), ``reduce`` the mean (default) or sum, and an optional per-class residual ``R``
  (C, d), zero at initialisation.
* ``text``: class ``c`` is a fixed feature row ``F[c]`` (C, D), e.g. a sentence or CLIP text
  embedding of its name; ``mu_c = P(F[c]) + R[c]`` with a learned projection ``P`` (a linear map
  D -> d, or an MLP with ``layers >= 2``) and the same optional residual.

Encoders return raw rows; :class:`~esseg.models.EmbeddingSegmenter` normalises them as it does
the table. ``encoder()`` gives the training classes (rows computed in chunks of
``chunk_size``, under gradient checkpointing when gradients are on and C spans several
chunks, so the activations of the MLP never exist for all C at once); ``encoder(descriptions)``
embeds a new class list (label-set swap). A new class described exactly like a training class
(the same token set, the same feature row) also gets that class's residual, so swapping in the
training descriptions reproduces the model's own table.

Registry: :data:`CLASS_ENCODERS` maps names to classes; ``"table"`` is built into the segmenter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from esseg._io import atomic_write_text
from esseg.errors import ConfigError

CHUNK_SIZE = 65536  # classes per chunk of the MLP


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> nn.Module:
    """``layers`` linear maps with ReLU between them (0: identity, needs in_dim == out_dim)."""
    if layers == 0:
        if in_dim != out_dim:
            raise ConfigError(f"layers=0 (no MLP) needs input dim {in_dim} == embedding_dim {out_dim}")
        return nn.Identity()
    dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def _unit_rows(mlp: nn.Module, inputs_fn, num_rows: int) -> None:
    """Scale the last linear layer so the initial rows have mean length 1 (like the table's rows)."""
    last = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    if not last:
        return
    with torch.no_grad():
        sample = inputs_fn(0, min(num_rows, 4096))
        norm = float(mlp(sample).norm(dim=1).mean())
        if norm > 0:
            last[-1].weight.div_(norm)
            last[-1].bias.div_(norm)


class _ChunkedEncoder(nn.Module):
    """Shared plumbing: chunked evaluation, optional residual, residual lookup for new classes."""

    name = ""

    def __init__(self, num_classes: int, embedding_dim: int, residual: bool, chunk_size: int):
        super().__init__()
        if chunk_size < 1:
            raise ConfigError(f"class encoder chunk_size must be >= 1, got {chunk_size}")
        self.num_classes, self.embedding_dim, self.chunk_size = num_classes, embedding_dim, chunk_size
        self.residual = nn.Parameter(torch.zeros(num_classes, embedding_dim)) if residual else None

    def _rows(self, lo: int, hi: int) -> torch.Tensor:  # (hi - lo, d) shared part for training classes
        raise NotImplementedError

    def _new_rows(self, descriptions) -> tuple[torch.Tensor, torch.Tensor]:
        """(C', d) shared part of new classes and (C',) int64 index of the identical training class or -1."""
        raise NotImplementedError

    def forward(self, descriptions=None) -> torch.Tensor:
        """Raw (C, d) embeddings of the training classes, or (C', d) of ``descriptions``."""
        if descriptions is not None:
            rows, same = self._new_rows(descriptions)
            if self.residual is not None and bool((same >= 0).any()):
                res = self.residual[same.clamp(min=0)] * (same >= 0).unsqueeze(1).to(rows.dtype)
                rows = rows + res
            return rows
        step = self.chunk_size
        chunks = []
        for lo in range(0, self.num_classes, step):
            hi = min(lo + step, self.num_classes)
            if torch.is_grad_enabled() and self.num_classes > step:
                chunks.append(checkpoint(self._rows, lo, hi, use_reentrant=False))
            else:
                chunks.append(self._rows(lo, hi))
        rows = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        return rows + self.residual if self.residual is not None else rows


class AttributeEncoder(_ChunkedEncoder):
    """``mu_c = MLP(reduce_{t in T_c} E[t]) + R[c]``: class embeddings from sets of attribute tokens.

    Args:
        num_classes: C. embedding_dim: d.
        class_attributes: C token lists (strings; order and repeats within a class do not matter
            for ``mean`` up to repeats, which count twice). Every class needs >= 1 token.
        token_dim: h, the token embedding size (default d).
        hidden_dim: MLP width (default 2 h). layers: linear layers of the MLP (0: none, h must be d).
        reduce: ``"mean"`` or ``"sum"`` over a class's tokens.
        residual: add a zero-initialised learned (C, d) per-class residual ``R``.
        chunk_size: classes per chunk (bounds the MLP's activations at large C).

    Shapes:
        ``forward()`` -> (C, d); ``forward(token_lists)`` -> (len(token_lists), d).

    The vocabulary is the sorted set of all tokens; token ids live in buffers ``tokens`` (C, L),
    padded with the id V (a zero row that ``embedding_bag`` skips, so ``mean`` divides by the
    class's own token count).
    """

    name = "attributes"

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        class_attributes: Sequence[Sequence[str]] | None = None,
        token_dim: int | None = None,
        hidden_dim: int | None = None,
        layers: int = 2,
        reduce: str = "mean",
        residual: bool = True,
        chunk_size: int = CHUNK_SIZE,
    ):
        super().__init__(num_classes, embedding_dim, residual, chunk_size)
        if class_attributes is None:
            raise ConfigError("class_encoder 'attributes' needs class_attributes: a list of C token lists "
                              "(a dataset's class_attributes, or model.class_attributes=FILE.tsv)")
        attrs = check_class_attributes(class_attributes, num_classes)
        if reduce not in ("mean", "sum"):
            raise ConfigError(f"attributes encoder reduce must be 'mean' or 'sum', got {reduce!r}")
        if layers < 0:
            raise ConfigError(f"attributes encoder layers must be >= 0, got {layers}")
        self.vocab = sorted({t for tokens in attrs for t in tokens})
        self._index = {t: i for i, t in enumerate(self.vocab)}
        self.token_dim = token_dim or embedding_dim
        self.hidden_dim = hidden_dim or 2 * self.token_dim
        self.layers, self.reduce = layers, reduce
        self.class_attributes = [list(tokens) for tokens in attrs]
        self.register_buffer("tokens", self._ids(attrs), persistent=False)
        self.token_embeddings = nn.Parameter(torch.randn(len(self.vocab) + 1, self.token_dim))
        with torch.no_grad():
            self.token_embeddings[-1].zero_()  # the padding row
        self.mlp = _mlp(self.token_dim, self.hidden_dim, embedding_dim, layers)
        _unit_rows(self.mlp, self._bags, num_classes)
        self._known = {tuple(sorted(tokens)): c for c, tokens in enumerate(attrs)}

    def _ids(self, attrs: Sequence[Sequence[str]]) -> torch.Tensor:
        width = max(len(t) for t in attrs)
        pad = len(self.vocab)
        ids = torch.full((len(attrs), width), pad, dtype=torch.long)
        for c, tokens in enumerate(attrs):
            ids[c, : len(tokens)] = torch.tensor([self._index[t] for t in tokens], dtype=torch.long)
        return ids

    def _bags(self, lo: int, hi: int, tokens: torch.Tensor | None = None) -> torch.Tensor:
        ids = (self.tokens if tokens is None else tokens)[lo:hi]
        return F.embedding_bag(ids, self.token_embeddings, mode=self.reduce, padding_idx=len(self.vocab))

    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        return self.mlp(self._bags(lo, hi))

    def _new_rows(self, descriptions):
        attrs = check_class_attributes(descriptions, len(descriptions), what="the new class list")
        for c, tokens in enumerate(attrs):
            unknown = [t for t in tokens if t not in self._index]
            if unknown:
                raise ConfigError(
                    f"class {c} of the new class list has attribute token {unknown[0]!r} that the model never learned "
                    f"({len(self.vocab)} known tokens, e.g. {', '.join(self.vocab[:5])}); describe it with known tokens"
                )
        ids = self._ids(attrs).to(self.token_embeddings.device)
        rows = torch.cat([self.mlp(self._bags(lo, lo + self.chunk_size, ids)) for lo in range(0, len(attrs), self.chunk_size)])
        same = torch.tensor([self._known.get(tuple(sorted(t)), -1) for t in attrs], dtype=torch.long, device=rows.device)
        return rows, same

    def options(self) -> dict:
        """Plain keyword arguments that rebuild this encoder (with C and d)."""
        return dict(class_attributes=self.class_attributes, token_dim=self.token_dim, hidden_dim=self.hidden_dim,
                    layers=self.layers, reduce=self.reduce, residual=self.residual is not None, chunk_size=self.chunk_size)


class TextEncoder(_ChunkedEncoder):
    """``mu_c = P(F[c]) + R[c]``: class embeddings projected from fixed per-class text features.

    Args:
        num_classes: C. embedding_dim: d.
        text_features: (C, D) features (tensor, array, or a ``.npy``/``.pt`` file), rows in class
            order; ``None`` with ``text_dim=D`` builds zeros for a checkpoint's state to fill.
        text_dim: D (checked against ``text_features`` when both are given).
        hidden_dim: MLP width when ``layers >= 2`` (default 2 d). layers: 1 = a linear projection.
        residual, chunk_size: as :class:`AttributeEncoder`.

    Shapes:
        ``forward()`` -> (C, d); ``forward(features (C', D))`` -> (C', d).

    The features are a buffer (saved in the state dict); they are not trained.
    """

    name = "text"

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        text_features=None,
        text_dim: int | None = None,
        hidden_dim: int | None = None,
        layers: int = 1,
        residual: bool = True,
        chunk_size: int = CHUNK_SIZE,
    ):
        super().__init__(num_classes, embedding_dim, residual, chunk_size)
        if text_features is None and text_dim is None:
            raise ConfigError("class_encoder 'text' needs text_features: a C x D .npy/.pt file (model.text_features=FILE)")
        feats = (torch.zeros(num_classes, text_dim) if text_features is None
                 else load_text_features(text_features, num_classes))
        if text_dim is not None and feats.shape[1] != text_dim:
            raise ConfigError(f"text features have {feats.shape[1]} columns but text_dim={text_dim}")
        if layers < 1:
            raise ConfigError(f"text encoder layers must be >= 1 (1 = a linear projection), got {layers}")
        self.text_dim, self.layers = int(feats.shape[1]), layers
        self.hidden_dim = hidden_dim or 2 * embedding_dim
        self.register_buffer("text_features", feats)
        self.projection = _mlp(self.text_dim, self.hidden_dim, embedding_dim, layers)
        if text_features is not None:
            _unit_rows(self.projection, lambda lo, hi: self.text_features[lo:hi], num_classes)

    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        return self.projection(self.text_features[lo:hi])

    def _new_rows(self, descriptions):
        feats = load_text_features(descriptions, None).to(self.text_features)
        if feats.shape[1] != self.text_dim:
            raise ConfigError(f"the new class list's text features have {feats.shape[1]} columns; the model was trained "
                              f"on {self.text_dim} (use the same text encoder)")
        rows = torch.cat([self.projection(feats[lo:lo + self.chunk_size]) for lo in range(0, len(feats), self.chunk_size)])
        known = {self.text_features[c].cpu().numpy().tobytes(): c for c in range(self.num_classes)}
        same = torch.tensor([known.get(row.cpu().numpy().tobytes(), -1) for row in feats], dtype=torch.long,
                            device=rows.device)
        return rows, same

    def options(self) -> dict:
        """Plain keyword arguments that rebuild this encoder; the features come from the state dict."""
        return dict(text_dim=self.text_dim, hidden_dim=self.hidden_dim, layers=self.layers,
                    residual=self.residual is not None, chunk_size=self.chunk_size)


CLASS_ENCODERS: dict[str, type[_ChunkedEncoder]] = {"attributes": AttributeEncoder, "text": TextEncoder}
ENCODER_NAMES = ("table", *CLASS_ENCODERS)


def build_class_encoder(name: str, num_classes: int, embedding_dim: int, **options) -> _ChunkedEncoder | None:
    """The encoder ``name`` (None for ``"table"``, the segmenter's own free table).

    Raises:
        ConfigError: an unknown name (listing the known ones) or options the encoder does not take.
    """
    if name == "table":
        if options:
            raise ConfigError(f"class_encoder 'table' takes no options; got {', '.join(sorted(options))}")
        return None
    if name not in CLASS_ENCODERS:
        raise ConfigError(f"unknown class_encoder {name!r}; known class encoders: {', '.join(ENCODER_NAMES)}")
    try:
        return CLASS_ENCODERS[name](num_classes, embedding_dim, **options)
    except TypeError as err:
        raise ConfigError(f"class_encoder {name!r}: {err}") from None


# ------------------------------------------------------------------------ descriptions


def check_class_attributes(attrs, num_classes: int, what: str = "class_attributes") -> list[list[str]]:
    """``attrs`` as C lists of tokens (str without whitespace), each non-empty; ConfigError otherwise."""
    if isinstance(attrs, (str, bytes)) or not isinstance(attrs, Sequence):
        raise ConfigError(f"{what} must be a list of C token lists, got {type(attrs).__name__}")
    if len(attrs) != num_classes:
        raise ConfigError(f"{what} describes {len(attrs)} classes but the model has C={num_classes}; give one token list per class")
    out = []
    for c, tokens in enumerate(attrs):
        if isinstance(tokens, str):
            tokens = tokens.split()
        tokens = [str(t) for t in tokens]
        if not tokens:
            raise ConfigError(f"{what} gives no attribute tokens for class {c}; every class needs at least one")
        bad = [t for t in tokens if not t or any(ch.isspace() for ch in t)]
        if bad:
            raise ConfigError(f"{what}: class {c} has token {bad[0]!r}; tokens are non-empty and hold no whitespace")
        out.append(tokens)
    return out


def read_class_list(path: str | Path, num_classes: int | None = None) -> tuple[list[str] | None, list[list[str]]]:
    """Read a class attributes TSV: lines ``id<TAB>token token ...[<TAB>name]``; ``#`` starts a comment.

    Ids must be ``0 .. C-1``, each once (any order). Returns ``(names or None, token lists)``;
    names are ``None`` when no line has a third column. ``num_classes`` checks C.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class attributes file {path} not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read class attributes file {path}: {err}") from None
    rows: dict[int, tuple[list[str], str | None]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        try:
            cid = int(parts[0])
        except ValueError:
            raise ConfigError(f"{path}:{n}: expected 'id<TAB>token token ...', got {line[:60]!r}") from None
        if cid in rows:
            raise ConfigError(f"{path}:{n}: class {cid} is listed twice")
        tokens = parts[1].split() if len(parts) > 1 else []
        rows[cid] = (tokens, parts[2].strip() if len(parts) > 2 else None)
    total = num_classes if num_classes is not None else (max(rows) + 1 if rows else 0)
    if total == 0:
        raise ConfigError(f"{path} lists no classes")
    extra = sorted(c for c in rows if not 0 <= c < total)
    if extra:
        raise ConfigError(f"{path}: class id {extra[0]} is outside [0, {total}) (the model has C={total})")
    missing = [c for c in range(total) if c not in rows or not rows[c][0]]
    if missing:
        raise ConfigError(f"{path} gives no attribute tokens for class {missing[0]} ({len(missing)} of {total} classes lack "
                          f"them); add a line '{missing[0]}<TAB>token token ...'")
    attrs = check_class_attributes([rows[c][0] for c in range(total)], total, str(path))
    names = [rows[c][1] or f"class {c}" for c in range(total)] if any(rows[c][1] for c in range(total)) else None
    return names, attrs


def write_class_list(path: str | Path, class_attributes: Sequence[Sequence[str]], names: Sequence[str] | None = None) -> Path:
    """Write a class attributes TSV that :func:`read_class_list` reads back (atomically)."""
    attrs = check_class_attributes(class_attributes, len(class_attributes))
    lines = [f"{c}\t{' '.join(tokens)}" + (f"\t{names[c]}" if names is not None else "") for c, tokens in enumerate(attrs)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def load_text_features(source, num_classes: int | None) -> torch.Tensor:
    """(C, D) float32 text features from a tensor, array, or ``.npy``/``.pt`` file; checks C and finiteness."""
    where = "text features"
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = f"text feature file {path}"
        if not path.is_file():
            raise ConfigError(f"{where} not found")
        try:
            if path.suffix == ".npy":
                source = np.load(path, allow_pickle=False)
            elif path.suffix == ".pt":
                source = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise ConfigError(f"{where} must be a .npy or .pt file holding a C x D matrix")
        except ConfigError:
            raise
        except Exception as err:  # a corrupt or foreign file
            raise ConfigError(f"cannot read {where}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    try:
        feats = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor) else source).float()
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must hold a C x D numeric matrix, got {type(source).__name__}") from None
    if feats.dim() != 2:
        raise ConfigError(f"{where} must be a C x D matrix, got shape {tuple(feats.shape)}")
    if num_classes is not None and feats.shape[0] != num_classes:
        raise ConfigError(f"{where} has {feats.shape[0]} rows but the model has C={num_classes} classes; "
                          "give one row per class, in class order")
    if not bool(torch.isfinite(feats).all()):
        raise ConfigError(f"{where} holds NaN or inf values")
    return feats.contiguous()


def load_class_list(path: str | Path, class_encoder: str) -> tuple[list[str], list[list[str]] | torch.Tensor]:
    """A class list for a label-set swap: ``(names, descriptions)`` for a model's ``class_encoder``.

    ``attributes``: a ``.tsv`` as :func:`read_class_list` (names from its optional third column,
    else ``class <i>``). ``text``: a ``.npy``/``.pt`` (C', D) feature file; names from the
    ``.txt`` file of the same stem (one per line) when present.

    Raises:
        ConfigError: a ``table`` model (it cannot embed new classes), a file of the wrong kind.
    """
    path = Path(path)
    if class_encoder == "table":
        raise ConfigError(f"--classes {path}: this model has a free class table (model.class_encoder=table) and cannot "
                          "embed new classes; only models trained with model.class_encoder=attributes or text can")
    if class_encoder == "attributes":
        if path.suffix.lower() != ".tsv":
            raise ConfigError(f"--classes {path}: the model's class encoder is 'attributes'; pass a .tsv of "
                              "'id<TAB>token token ...[<TAB>name]' lines")
        names, attrs = read_class_list(path)
        return names or [f"class {c}" for c in range(len(attrs))], attrs
    if path.suffix.lower() not in (".npy", ".pt"):
        raise ConfigError(f"--classes {path}: the model's class encoder is 'text'; pass a C x D .npy/.pt text-feature "
                          "file (names from the .txt of the same stem)")
    feats = load_text_features(path, None)
    names_file = path.with_suffix(".txt")
    names = [f"class {c}" for c in range(len(feats))]
    if names_file.is_file():
        lines = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) != len(feats):
            raise ConfigError(f"{names_file} names {len(lines)} classes but {path} has {len(feats)} feature rows")
        names = lines
    return names, feats


def encoder_param_count(encoder: nn.Module | None, num_classes: int, embedding_dim: int) -> int:
    """Learned numbers of a class encoder (the table's C x d when ``encoder`` is None)."""
    if encoder is None:
        return num_classes * embedding_dim
    return sum(p.numel() for p in encoder.parameters())


__all__ = [
    "AttributeEncoder", "CLASS_ENCODERS", "CHUNK_SIZE", "ENCODER_NAMES", "TextEncoder", "build_class_encoder",
    "check_class_attributes", "encoder_param_count", "load_class_list", "load_text_features", "read_class_list",
    "write_class_list",
]

"""Export a checkpoint for use without esseg: class embeddings as files, and the model as a
``torch.export`` (pt2), TorchScript or ONNX graph that outputs the label map.

It lives beside the engine, not in ``esseg.viz`` (figures) nor ``esseg.models`` (which must not
depend on the engine's checkpoint reader); its readers are the ``esseg export`` and
``esseg export-embeddings`` commands.

``export_embeddings`` writes ``class_embeddings.pt`` and ``.npy`` (the (C, d) embeddings the
model classifies with, i.e. ``model.class_embeddings()``) and ``classes.tsv`` (index, name and
the length of the raw learned ``class_table`` row).

``export_model`` wraps the model in :class:`LabelMapModel`, whose output is the label map
itself, so a deployment needs no esseg code. It runs the model's own prediction path (padding
to the network's input multiple and cropping back: ``esseg.models.segmenter.forward_any_size``,
as ``model.predict`` does); only the classification is written for tracing: for ESS the nearest-class search
``argmin_c ||x - mu_c||^2 = argmax_c (2 x.mu_c - ||mu_c||^2)`` is one matmul against the class
table baked into the graph as a constant; for the baseline it is ``argmax`` over the logits.
``torch.export`` (``--format pt2``) is the format torch recommends; TorchScript (deprecated
in torch 2.14) and ONNX stay for older runtimes. Before anything is written the exported graph is run on random images and compared with the
eager model's ``predict``; a disagreement (other than an exact-tie flip) is an error.
All files are written atomically (a temporary file in the target folder, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from esseg._io import atomic_write as _atomic
from esseg._io import atomic_write_text
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.evaluate import predict_batch
from esseg.errors import CheckpointError, EssegError
from esseg.models.segmenter import forward_any_size

try:  # torch.export's "size-oblivious" shapes (torch >= 2.6; a private switch, hence guarded)
    from torch.fx.experimental import _config as fx_config
except ImportError:  # pragma: no cover - older torch
    fx_config = None

FORMATS = ("torchscript", "onnx", "pt2")
# Classes scored at once by the exported nearest-class search: above this the graph scores the
# class table in chunks of this size (unrolled, C is fixed at export time) with a running
# maximum, so its memory is pixels x chunk instead of pixels x C.
EXPORT_CLASS_CHUNK = 8192
TIE_TOLERANCE = 1e-4  # relative score gap under which a differing label counts as a tie


# ----------------------------------------------------------------------------- embeddings


def export_embeddings(checkpoint: str | Path, out_dir: str | Path) -> dict:
    """Write an ESS checkpoint's class embeddings to ``out_dir``.

    Files: ``class_embeddings.pt`` (a (C, d) float32 tensor, ``torch.load(..., weights_only=True)``),
    ``class_embeddings.npy`` (the same array) and ``classes.tsv`` (header ``index, name, norm``;
    ``norm`` is the length of the raw ``class_table`` row: all ~1 in the exported embeddings of
    a normalising model, but informative for the learned table, see ``esseg viz norms``).

    Returns:
        ``{"pt", "npy", "tsv"}`` paths and ``embeddings`` (the (C, d) tensor written).
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    if not getattr(model, "is_embedding", False):
        raise CheckpointError(f"checkpoint {checkpoint} holds the softmax baseline, which has no class embeddings; "
                              "export-embeddings needs an ESS checkpoint")
    emb = model.class_embeddings().detach().float().cpu().contiguous()
    norms = model.class_table.detach().float().norm(dim=1).cpu()
    names = [str(n) for n in ckpt.get("class_names") or range(model.num_classes)]
    if len(names) != model.num_classes:
        names = [str(c) for c in range(model.num_classes)]
    out = Path(out_dir)
    pt = _atomic(out / "class_embeddings.pt", lambda tmp: torch.save(emb.clone(), tmp))

    def write_npy(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, emb.numpy())

    npy = _atomic(out / "class_embeddings.npy", write_npy)
    clean = lambda s: s.replace("\t", " ").replace("\n", " ")  # noqa: E731
    rows = "".join(f"{c}\t{clean(n)}\t{float(v):.6f}\n" for c, (n, v) in enumerate(zip(names, norms)))
    tsv = atomic_write_text(out / "classes.tsv", "index\tname\tnorm\n" + rows)
    return {"pt": pt, "npy": npy, "tsv": tsv, "embeddings": emb}


# --------------------------------------------------------------------------------- model


class LabelMapModel(nn.Module):
    """An ESS or baseline model whose output is the label map: images (B, 3, H, W) -> (B, H, W) int64.

    The model's own padded forward (:func:`esseg.models.segmenter.forward_any_size`: pad H and
    W to the network's input multiple, run, upsample, crop back; ESS: pixel embeddings,
    normalised if the model normalises), then per pixel:

    - ESS: ``argmin_c ||x - mu_c||^2``, computed as ``argmax_c (2 x.mu_c - ||mu_c||^2)``, one
      matmul with the ``class_embeddings`` buffer (C, d), a constant in the exported graph
      (``model.predict``'s blocked search has data-dependent checks that do not trace); above
      :data:`EXPORT_CLASS_CHUNK` classes one matmul per chunk of classes with a running maximum
      (the first maximum wins, as in ``argmax``), so the graph's memory does not grow with C
      (its time does: the exported search is exact; the inverted-file index of ``model.predict``
      does not trace);
    - baseline: ``argmax_c`` of the logits.

    Equals ``model.predict`` (up to exact ties) and holds only plain tensor ops, so it exports
    (``torch.export``) and traces (TorchScript, ONNX) with dynamic batch, height and width.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.is_embedding = bool(getattr(model, "is_embedding", False))
        if self.is_embedding:
            mu = model.class_embeddings().detach().float().clone()
            self.register_buffer("class_embeddings", mu)
            self.register_buffer("class_sq_norms", (mu * mu).sum(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = forward_any_size(self.model, images)
        if not self.is_embedding:
            return out.argmax(1)
        x = out.permute(0, 2, 3, 1)
        c = self.class_embeddings.shape[0]
        best_score, best = None, None
        for s in range(0, c, EXPORT_CLASS_CHUNK):  # C is a constant of the graph: unrolled when traced
            mu, sq = self.class_embeddings[s : s + EXPORT_CLASS_CHUNK], self.class_sq_norms[s : s + EXPORT_CLASS_CHUNK]
            score, label = (2 * torch.matmul(x, mu.t()) - sq).max(-1)
            if best is None:
                best_score, best = score, label
            else:
                better = score > best_score
                best_score, best = torch.where(better, score, best_score), torch.where(better, label + s, best)
        return best


def random_images(size: int, seed: int = 0) -> list[torch.Tensor]:
    """The check images: one (1, 3, size, size) and one (2, 3, size + 8, size - 5) (other batch and odd sizes)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, size, size, generator=g), torch.randn(2, 3, size + 8, max(8, size - 5), generator=g)]


@torch.no_grad()
def _score_gap(model: nn.Module, images: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per pixel, the eager model's |score(a) - score(b)| relative to the score size (ESS: -squared distance)."""
    out = forward_any_size(model, images).float()
    if getattr(model, "is_embedding", False):
        pix = out.permute(0, 2, 3, 1)
        mu = model.class_embeddings().detach().float()
        sa, sb = -((pix - mu[a]) ** 2).sum(-1), -((pix - mu[b]) ** 2).sum(-1)
    else:
        sa, sb = out.gather(1, a[:, None])[:, 0], out.gather(1, b[:, None])[:, 0]
    return (sa - sb).abs() / (1 + torch.maximum(sa.abs(), sb.abs()))


def check_label_maps(model: nn.Module, images: torch.Tensor, expected: torch.Tensor, got, what: str) -> None:
    """Raise EssegError unless ``got`` equals ``expected`` (the eager labels) except at exact ties."""
    got = torch.as_tensor(got)
    if tuple(got.shape) != tuple(expected.shape) or got.dtype != torch.int64:
        raise EssegError(f"{what} returned {got.dtype} {tuple(got.shape)}; expected int64 {tuple(expected.shape)}; nothing written")
    out_of_range = (got < 0) | (got >= model.num_classes)
    if out_of_range.any():
        raise EssegError(f"{what} returned label {int(got[out_of_range][0])} outside [0, {model.num_classes}); nothing written")
    diff = got != expected
    if not diff.any():
        return
    bad = diff & (_score_gap(model, images, expected, got) > TIE_TOLERANCE)
    if bad.any():
        raise EssegError(f"{what} disagrees with the eager model's predict on {int(bad.sum())} of {expected.numel()} "
                         f"pixels of a random {tuple(images.shape)} image; nothing written")


def _trace(wrapper: nn.Module, example: torch.Tensor):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(wrapper, example, check_trace=False)


def _torch_export(wrapper: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export.export`` with dynamic batch, height and width.

    Sizes are exported "size-oblivious": without it, torch specialises a dimension whose example
    is 1 (batch 1 would be the only batch) and the padding to the input multiple (an image that
    needs none would fail the graph's guards). The example should need padding and have batch > 1.
    """
    auto = torch.export.Dim.AUTO
    try:
        oblivious = hasattr(fx_config, "backed_size_oblivious")
        with fx_config.patch(backed_size_oblivious=True) if oblivious else contextlib.nullcontext(), torch.no_grad():
            return torch.export.export(wrapper, (example,), dynamic_shapes={"images": {0: auto, 2: auto, 3: auto}})
    except Exception as err:  # noqa: BLE001 - report any exporter failure as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EssegError(f"torch.export failed: {first}; try --format torchscript") from None


def _onnx_modules():
    try:
        import onnx  # noqa: F401, PLC0415
        import onnxruntime  # noqa: PLC0415
    except ImportError as err:
        raise EssegError(f'--format onnx needs the onnx and onnxruntime packages ({err.name} is missing); '
                         'install them with pip install "esseg[onnx]", or use --format torchscript') from None
    return onnxruntime


def export_model(checkpoint: str | Path, out: str | Path, fmt: str = "torchscript", size: int = 64, seed: int = 0) -> dict:
    """Export a checkpoint as a pt2, TorchScript or ONNX graph: images (B, 3, H, W) float -> labels (B, H, W) int64.

    The graph (:class:`LabelMapModel`) takes images normalised like the training data
    (ImageNet mean/std) of any batch size and height/width (padded internally to the network's
    input multiple, as ``model.predict`` does). Before ``out`` is written, the saved artefact is reloaded and run on two random
    images (see :func:`random_images`) and checked against the eager model's prediction.

    Args:
        fmt: ``"pt2"`` (``torch.export.export`` + ``torch.export.save``; load with
            ``torch.export.load(out).module()``), ``"torchscript"`` (``torch.jit.load(out)``) or
            ``"onnx"`` (needs ``onnx`` and ``onnxruntime``: ``pip install "esseg[onnx]"``;
            input ``images``, output ``labels``).
        size: side of the square example image used for tracing and checking.

    Returns:
        ``{"path", "format", "checked": [image shapes], "method": "ess" | "baseline"}``.
    """
    if fmt not in FORMATS:
        raise EssegError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if size < 8:
        raise EssegError(f"--size must be >= 8; got {size}")
    ort = _onnx_modules() if fmt == "onnx" else None
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint).float()
    wrapper = LabelMapModel(model).eval()
    images = random_images(size, seed)
    expected = [predict_batch(model, x) for x in images]

    def write(tmp: Path) -> None:
        if fmt == "pt2":
            torch.export.save(_torch_export(wrapper, images[1]), str(tmp))
            run = torch.export.load(str(tmp)).module()
        elif fmt == "torchscript":
            with warnings.catch_warnings(), torch.no_grad():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated.*")
                torch.jit.save(_trace(wrapper, images[0]), str(tmp))
                loaded = torch.jit.load(str(tmp))
            run = lambda x: loaded(x)  # noqa: E731
        else:
            _export_onnx(wrapper, images[0], tmp)
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            run = lambda x: torch.from_numpy(session.run(["labels"], {"images": x.numpy()})[0])  # noqa: E731
        with torch.no_grad():
            for x, want in zip(images, expected):
                try:
                    got = run(x)
                except Exception as err:  # noqa: BLE001 - e.g. a shape guard of the exported graph
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise EssegError(f"the exported {fmt} model failed on a random {tuple(x.shape)} image "
                                     f"({first}); nothing written") from None
                check_label_maps(model, x, want, got, f"the exported {fmt} model")

    path = _atomic(Path(out), write)
    return {"path": path, "format": fmt, "checked": [tuple(x.shape) for x in images],
            "method": "ess" if wrapper.is_embedding else "baseline"}


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, "labels": {0: "batch", 1: "height", 2: "width"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), str(path), input_names=["images"], output_names=["labels"],
                              dynamic_axes=dynamic, opset_version=17, dynamo=False)
    except Exception as err:  # noqa: BLE001 - report any exporter failure as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EssegError(f"ONNX export failed: {first}") from None


__all__ = ["FORMATS", "LabelMapModel", "check_label_maps", "export_embeddings", "export_model",
           "random_images"]

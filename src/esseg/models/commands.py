"""``esseg embed-class-names``: text features of class names for ``model.class_encoder=text``.

The features are computed by a text encoder that must already be on this machine (nothing is
downloaded); three kinds of ``--model``:

* ``MODULE:FUNCTION`` (a plug-in): ``FUNCTION(names: list[str]) -> (C, D) array``, imported
  from ``MODULE`` (anything on ``sys.path``), e.g. a wrapper around a CLIP text tower;
* a local folder holding a Hugging Face ``transformers`` model and tokenizer (``config.json``):
  the mean of the last hidden states over each name's tokens;
* any other name: a ``sentence-transformers`` model loaded with ``local_files_only=True``
  (default ``sentence-transformers/all-MiniLM-L6-v2``, if it is in the local cache).

A missing package or missing weights give one line that says what to install or pass.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

from esseg._io import atomic_write
from esseg.errors import ConfigError
from esseg.models.class_encoders import load_text_features, read_class_list

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file (one per line) or a class attributes ``.tsv`` (its names, else its tokens)."""
    path = Path(path)
    if path.suffix.lower() == ".tsv":
        names, attrs = read_class_list(path)
        return names or [" ".join(t) for t in attrs]
    if not path.is_file():
        raise ConfigError(f"class names file {path} not found")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read class names file {path}: {err}") from None
    if not names:
        raise ConfigError(f"{path} holds no class names (one per line)")
    return names


def _plugin(spec: str):
    module, _, func = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as err:
        raise ConfigError(f"--model {spec}: cannot import module {err.name!r}; put it on PYTHONPATH") from None
    except AttributeError:
        raise ConfigError(f"--model {spec}: module {module!r} has no function {func!r}") from None
    return fn


def _transformers_embed(folder: Path, names: list[str]) -> np.ndarray:
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise ConfigError(f"--model {folder} is a transformers model folder but transformers is not installed "
                          "(pip install transformers)") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the transformers model in {folder}: {str(err).splitlines()[0]}") from None
    out = []
    with torch.no_grad():
        for lo in range(0, len(names), 256):
            batch = tokenizer(names[lo:lo + 256], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, L, D)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out).numpy()


def _sentence_transformers_embed(name: str, names: list[str]) -> np.ndarray:
    try:
        st = importlib.import_module("sentence_transformers")
    except ImportError:
        raise ConfigError(
            f"embed-class-names --model {name} needs sentence-transformers (pip install sentence-transformers) with the "
            "model's weights on disk; or pass a local transformers model folder, or --model MODULE:FUNCTION"
        ) from None
    try:
        model = st.SentenceTransformer(name, local_files_only=True)
    except Exception as err:  # noqa: BLE001  (any loader failure: missing weights, no network)
        raise ConfigError(f"cannot load sentence-transformers model {name!r} from disk: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return np.asarray(model.encode(names, convert_to_numpy=True))


def embed_class_names(names: list[str], model: str = DEFAULT_TEXT_MODEL) -> torch.Tensor:
    """(C, D) float32 text features of ``names`` with the text encoder ``model`` (see the module docstring).

    Raises:
        ConfigError: the encoder's package or weights are missing, or it returned no (C, D) matrix.
    """
    if ":" in model and not Path(model).exists():
        feats = _plugin(model)(list(names))
    elif Path(model).is_dir():
        feats = _transformers_embed(Path(model), list(names))
    else:
        feats = _sentence_transformers_embed(model, list(names))
    return load_text_features(feats if isinstance(feats, torch.Tensor) else np.asarray(feats), len(names))


def write_text_features(features: torch.Tensor, out: str | Path) -> Path:
    """Write (C, D) features as ``.npy`` or ``.pt`` (by the suffix), atomically."""
    out = Path(out)
    if out.suffix not in (".npy", ".pt"):
        raise ConfigError(f"--out {out} must end in .npy or .pt")

    def write(tmp: Path) -> None:
        if out.suffix == ".pt":
            torch.save(features.clone(), tmp)
        else:
            with open(tmp, "wb") as f:
                np.save(f, features.numpy())

    return atomic_write(out, write)


def cmd_embed_class_names(args) -> int:
    """``esseg embed-class-names``."""
    names = read_class_names(args.classes)
    feats = embed_class_names(names, args.model)
    path = write_text_features(feats, args.out)
    print(f"wrote {feats.shape[0]} x {feats.shape[1]} text features to {path}; train with "
          f"--set model.class_encoder=text model.text_features={path}")
    return 0


def register(subparsers) -> None:
    """Add ``embed-class-names`` to the ``esseg`` parser."""
    p = subparsers.add_parser(
        "embed-class-names", help="text features of class names (for model.class_encoder=text)",
        description="Embed class names with a text encoder that is on this machine and write a C x D .npy/.pt file, "
                    "rows in class order, for model.text_features (or eval/predict --classes).",
    )
    p.add_argument("--classes", required=True, metavar="FILE",
                   help="class names, one per line, or a class attributes .tsv (its names column)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .npy or .pt")
    p.add_argument("--model", default=DEFAULT_TEXT_MODEL, metavar="NAME",
                   help=f"a sentence-transformers model in the local cache (default {DEFAULT_TEXT_MODEL}), a local "
                        "transformers model folder, or MODULE:FUNCTION returning a (C, D) array for a list of names")
    p.set_defaults(func=cmd_embed_class_names)


__all__ = ["DEFAULT_TEXT_MODEL", "embed_class_names", "read_class_names", "register", "write_text_features"]

"""The training configuration: a schema of dataclasses, loaded from YAML and ``--set`` overrides.

A config has five sections; every key has a default, so an empty config trains ESS on the
built-in ``glyph_scenes`` dataset::

    data:   dataset, root, options (extra dataset kwargs), val_options, train_split, val_split, crop_size,
            scale_range, flip, color_jitter, val_mode, num_workers, class_frequency
    model:  method (ess | baseline), arch, encoder, encoder_weights, embedding_dim, normalize, output_stride,
            class_encoder (table | attributes | text), class_attributes, text_features, class_encoder_options,
            class_init (random | spread), unit_pixels, max_pixel_length, learn_temperature, max_scale
    loss:   k, tau, margin, reg_weight, mode (knn | random | exact), query_stride, warmup_k, warmup_steps, tail_samples
    optim:  lr, momentum, weight_decay, backbone_lr_mult, poly_power, class_embedding_momentum,
            class_embedding_poly_power, class_embedding_weight_decay, class_embedding_lr_mult, temperature_lr_mult,
            backbone_bn_momentum, optimizer
    train:  iters, batch_size, accum_steps, amp, sync_bn, device, num_threads, seed, out_dir, resume, overwrite,
            stop_at, eval_every, save_every, log_every, eval_batch_size, num_vis, tensorboard

Keys are addressed as ``section.key`` (``--set loss.k=8``), and inside the mapping-valued keys
as ``section.key.name`` (``--set data.options.num_classes=5000``). An unknown key or a value of
the wrong type raises :class:`~esseg.errors.ConfigError` naming the key and the valid choices;
values are quoted shortened (``reprlib``), and YAML whose aliases expand to more than
``MAX_YAML_NODES`` values (an "alias bomb") is refused before it is built.
"""

from __future__ import annotations

import dataclasses
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from esseg.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config is a small text file
MAX_YAML_NODES = 100_000  # values of a YAML document after alias expansion

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 6
_REPR.maxlevel = 3


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters: messages never print a huge value."""
    return _REPR.repr(value)


@dataclass
class DataConfig:
    """Which dataset, its splits and options, and the paired transforms (``data.*``)."""

    dataset: str = "glyph_scenes"
    root: Optional[str] = None
    options: dict = field(default_factory=dict)  # extra keyword arguments of the dataset class
    val_options: dict = field(default_factory=dict)  # ... that differ for the validation split
    train_split: str = "train"
    val_split: str = "val"
    # None: no resizing/cropping/augmentation (the dataset's own tensors, e.g. glyph scenes);
    # an int or [h, w]: random scale + crop + flip for training via esseg.data.transforms.
    crop_size: Union[int, list[int], None] = None
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    color_jitter: bool = False
    val_mode: Literal["whole", "crop_val"] = "whole"
    num_workers: int = 0
    # images per class in the training split, stored in the checkpoint for eval's rare/common/frequent
    # mIoU: "auto" (count from the label files, cached in <out_dir>/class_frequency.json), "none",
    # or an `esseg data inspect --json` report of the training split
    class_frequency: Optional[str] = "auto"


@dataclass
class ModelConfig:
    """The network: ESS (``embedding_dim`` channels) or the C-logit baseline (``model.*``)."""

    method: Literal["ess", "baseline"] = "ess"
    arch: str = "deeplabv3plus"
    encoder: str = "mobilenet_v2"
    encoder_weights: Optional[str] = None
    embedding_dim: int = 12  # d; ignored by the baseline
    normalize: bool = True  # L2-normalise pixel and class embeddings (ESS; False = the Table 2 ablation)
    # with normalize: also normalise the pixel embeddings (the paper's); false = class embeddings only, so a
    # pixel's length is its own learned inverse temperature (a cosine classifier with per-pixel scale)
    unit_pixels: bool = True  # ignored by the baseline
    # with unit_pixels false: cap the pixel lengths r at this value (x * min(1, R / r)); null = no cap
    max_pixel_length: Optional[float] = None
    output_stride: int = 16
    # where the (C, d) class embeddings come from (esseg.models.class_encoders, docs/class_encoders.md):
    # table = a free learned row per class (the paper's); attributes = an MLP over learned attribute-token
    # embeddings; text = a learned projection of fixed per-class text features
    class_encoder: Literal["table", "attributes", "text"] = "table"
    # attributes: a class_attributes.tsv (id<TAB>token token ...); null = the dataset's own class_attributes
    # (glyph_scenes) or <data.root>/class_attributes.tsv
    class_attributes: Optional[str] = None
    text_features: Optional[str] = None  # text: a C x D .npy/.pt file, rows in class order
    class_encoder_options: dict = field(default_factory=dict)  # e.g. {layers: 2, reduce: mean, residual: true}
    # the free table's initial rows: random (Gaussian, the paper's) or spread (spread out on the sphere)
    class_init: Literal["random", "spread"] = "random"
    # learn the loss's temperature as a log-scale parameter of the model, from loss.tau (NormFace / CLIP style);
    # false = the paper's fixed tau. max_scale bounds 1 / tau (null: unbounded)
    learn_temperature: bool = False
    max_scale: Optional[float] = 100.0


@dataclass
class LossConfig:
    """ESSLoss options (``loss.*``; ignored by the baseline)."""

    k: int = 7
    tau: float = 0.05
    margin: float = 0.5
    reg_weight: float = 1.0
    mode: Literal["knn", "random", "exact"] = "knn"
    query_stride: int = 4  # share kNN negatives per 4x4 block (decoder resolution); 1 = every pixel
    backend: str = "auto"  # kNN search: auto (exact below esseg.knn.AUTO_INDEX_MIN_CLASSES, or FAISS flat below AUTO_INDEX_MIN_CLASSES_FAISS; index above), torch, ivf, faiss...
    index_refresh_every: int = 100  # steps between rebuilds of the training index's partition (backend ivf/auto)
    # negatives warm-up (knn/random modes): k starts at warmup_k and falls linearly to k over warmup_steps
    # (esseg.engine.train.negatives_schedule); null / 0 = k throughout (the paper's)
    warmup_k: Optional[int] = None
    warmup_steps: int = 0
    # m > 0: m uniformly drawn classes per block estimate the softmax mass beyond the k nearest
    # (knn mode; esseg.losses.knn_cross_entropy's tail_samples); 0 = the paper's Eq. 6
    tail_samples: int = 0


@dataclass
class OptimConfig:
    """SGD with per-group poly LR, the paper's recipe (``optim.*``, see ``esseg.build_optimizer``)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 0.1
    poly_power: float = 0.9
    class_embedding_momentum: float = 0.95
    class_embedding_poly_power: float = 0.95
    class_embedding_weight_decay: float = 0.0
    class_embedding_lr_mult: float = 1.0  # lr of the class table (or class encoder) = lr * this
    temperature_lr_mult: float = 1.0  # lr of the learned temperature (model.learn_temperature) = lr * this
    backbone_bn_momentum: float = 0.01
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: the paper; adamw: same groups, momentum as beta1


@dataclass
class TrainConfig:
    """Schedule, devices, checkpointing and logging (``train.*``; iterations, not epochs)."""

    iters: int = 1000
    batch_size: int = 8  # per process
    accum_steps: int = 1  # gradient accumulation: batch_size * accum_steps * world_size per step
    amp: bool = True  # mixed precision; only used on CUDA
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = None  # torch CPU threads (torch.set_num_threads); None: torch's default
    seed: int = 0
    out_dir: str = "runs/default"
    resume: Optional[str] = None  # a checkpoint path, or "auto" for <out_dir>/last.pt if present
    # out_dir already holds another run (last.pt, best.pt or metrics.jsonl): refused unless resuming,
    # or with overwrite=true, which first deletes that run's files (not other files in the folder)
    overwrite: bool = False
    stop_at: Optional[int] = None  # end this run early at this iteration (resume later)
    eval_every: int = 0  # iterations between evaluations; 0: only at the end
    # iterations between last.pt saves (also saved at evaluations, at the end and on SIGINT/SIGTERM);
    # 1000 bounds the work a hard kill (SIGKILL, power loss) loses to ~1000 steps; 0: no periodic saves
    save_every: int = 1000
    log_every: int = 10
    eval_batch_size: int = 1  # > 1 only if validation images share one size (crop_val, glyph scenes)
    num_vis: int = 4  # prediction images logged to TensorBoard / shown in the demo report
    tensorboard: bool = True


@dataclass
class Config:
    """A full training config: the five sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (str, numbers, bools, None, lists, dicts): YAML/JSON/checkpoint safe."""
        return dataclasses.asdict(self)


_SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "train": TrainConfig}


def valid_keys() -> list[str]:
    """All ``section.key`` names, in schema order."""
    return [f"{s}.{f.name}" for s, cls in _SECTION_CLASSES.items() for f in dataclasses.fields(cls)]


# ---------------------------------------------------------------------------------- typing


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str) -> Any:
    """Return ``value`` checked against (and minimally converted to) type ``tp``."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item_tp,) = typing.get_args(tp)
            return [_coerce(v, item_tp, key) for v in value]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    else:  # pragma: no cover - schema uses only the types above
        raise TypeError(f"unsupported config type {tp}")
    raise ConfigError(f"config key {key} must be {_type_name(tp)}, got {short_repr(value)}")


def _build_section(name: str, values: Any):
    cls = _SECTION_CLASSES[name]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {name!r} must be a mapping of keys, got {short_repr(values)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            shown = key if isinstance(key, str) and len(key) <= 60 else short_repr(key)
            raise ConfigError(f"unknown config key {name}.{shown}; valid keys in {name}: {', '.join(known)}")
        kwargs[key] = _coerce(value, hints[key], f"{name}.{key}")
    return cls(**kwargs)


def config_from_dict(d: dict | None) -> Config:
    """Build and validate a :class:`Config` from a nested dict (missing keys take defaults)."""
    d = d or {}
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
    for name in d:
        if name not in _SECTION_CLASSES:
            raise ConfigError(f"unknown config section {short_repr(name)}; valid sections: {', '.join(_SECTION_CLASSES)}")
    cfg = Config(**{name: _build_section(name, d.get(name)) for name in _SECTION_CLASSES})
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, updates: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply overrides, validate.

    Args:
        path: YAML file, or ``None`` for the built-in defaults.
        overrides: strings ``"section.key=value"``; ``value`` is parsed as YAML
            (``loss.k=8``, ``data.crop_size=[64,64]``, ``model.encoder_weights=null``).
        updates: ``{"section.key": value}`` applied last (the CLI's dedicated flags);
            ``None`` values are skipped.
    """
    d: dict = {}
    if path is not None:
        d = _read_config_file(Path(path))
    apply_overrides(d, overrides, updates)
    return config_from_dict(d)


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    not_text = f"config file {path} is not a YAML text file"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{not_text} ({path.stat().st_size} bytes; a config is a small .yaml file)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{not_text} (byte {err.start} is not UTF-8); pass a .yaml file such as configs/demo.yaml") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or type(err).__name__}") from None
    if "\x00" in text:
        raise ConfigError(f"{not_text} (it holds NUL bytes); pass a .yaml file such as configs/demo.yaml")
    try:
        d = yaml_load(text, str(path)) or {}
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot parse {path}: {_REPR.repr(first)[1:-1]}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a mapping of sections ({', '.join(_SECTION_CLASSES)})")
    return d


def _expanded_size(node: yaml.Node, where: str) -> int:
    """Values of ``node`` once every alias is expanded; refuses cycles and more than MAX_YAML_NODES."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{where}: a YAML alias refers to its own anchor (a recursive value); write the values out")
        active.add(key)
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = n.value if isinstance(n, yaml.SequenceNode) else []
        total = 1 + sum(size(c) for c in children)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: YAML aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); "
                "a config needs far fewer, write them out"
            )
        active.discard(key)
        sizes[key] = total
        return total

    return size(node)


def yaml_load(text: str, where: str = "config") -> Any:
    """``yaml.safe_load(text)``, refusing documents whose aliases expand to more than
    ``MAX_YAML_NODES`` values or refer to themselves (ConfigError naming ``where``)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply; a config needs a few levels") from None
    finally:
        loader.dispose()


def apply_overrides(d: dict, overrides: list[str] | None = None, updates: dict[str, Any] | None = None) -> dict:
    """Apply ``"section.key=value"`` strings, then ``{"section.key": value}`` updates, to ``d`` in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {short_repr(item)} must look like section.key=value (e.g. loss.k=8)")
        key, _, raw = item.partition("=")
        try:
            value = yaml_load(raw, f"override {short_repr(key.strip())}") if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        set_value(d, key.strip(), value)
    for key, value in (updates or {}).items():
        if value is not None:
            set_value(d, key, value)
    return d


def set_value(d: dict, key: str, value: Any) -> None:
    """Set ``d[section][name] = value`` for ``key = "section.name"``; unknown keys list the valid ones.

    Keys whose value is a mapping (``data.options``, ``data.val_options``) are reached further
    with dots: ``"data.options.num_classes"`` sets ``d["data"]["options"]["num_classes"]``
    (creating the mappings on the way, copying shared ones). Other keys take no deeper part.
    """
    section, _, rest = key.partition(".")
    name, deeper, sub = rest.partition(".")
    cls = _SECTION_CLASSES.get(section)
    if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(f"unknown config key {short_repr(key)}; valid keys: {', '.join(valid_keys())}")
    if not isinstance(d.get(section), dict):
        d[section] = {}
    if not deeper:
        d[section][name] = value
        return
    parts = [name, *sub.split(".")]
    if "" in parts:
        raise ConfigError(f"config key {short_repr(key)} has an empty part; write section.key or section.key.name")
    if typing.get_type_hints(cls)[name] is not dict:
        maps = ", ".join(f"{section}.{f.name}" for f in dataclasses.fields(cls) if typing.get_type_hints(cls)[f.name] is dict)
        raise ConfigError(
            f"unknown config key {short_repr(key)}: only mapping keys ({maps or 'none in ' + section}) take a "
            f"further .name; set {section}.{name} itself"
        )
    target = d[section]
    for depth, part in enumerate(parts[:-1]):
        inner = target.get(part)
        if inner is None:
            inner = {}
        elif not isinstance(inner, dict):
            where = ".".join([section, *parts[: depth + 1]])
            raise ConfigError(f"cannot set {short_repr(key)}: {where} is {short_repr(inner)}, not a mapping")
        target[part] = dict(inner)  # a copy: YAML aliases may share the mapping
        target = target[part]
    target[parts[-1]] = value


def validate(cfg: Config) -> None:
    """Check value ranges and cross-key consistency; raise ConfigError on the first problem."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    t, m, lo, o, dt = cfg.train, cfg.model, cfg.loss, cfg.optim, cfg.data
    for key in ("iters", "batch_size", "accum_steps", "eval_batch_size"):
        need(getattr(t, key) >= 1, f"train.{key} must be >= 1, got {getattr(t, key)}")
    for key in ("eval_every", "save_every", "log_every", "num_vis"):
        need(getattr(t, key) >= 0, f"train.{key} must be >= 0, got {getattr(t, key)}")
    need(t.stop_at is None or 1 <= t.stop_at <= t.iters, f"train.stop_at must be in [1, train.iters={t.iters}], got {t.stop_at}")
    need(t.num_threads is None or t.num_threads >= 1, f"train.num_threads must be >= 1 or null, got {t.num_threads}")
    need(dt.num_workers >= 0, f"data.num_workers must be >= 0, got {dt.num_workers}")
    if dt.crop_size is not None:
        size = [dt.crop_size] * 2 if isinstance(dt.crop_size, int) else dt.crop_size
        need(len(size) == 2 and min(size) >= 1, f"data.crop_size must be an int or [height, width] > 0, got {short_repr(dt.crop_size)}")
    need(len(dt.scale_range) == 2 and 0 < dt.scale_range[0] <= dt.scale_range[1],
         f"data.scale_range must be [min, max] with 0 < min <= max, got {short_repr(dt.scale_range)}")
    if m.method == "ess":
        need(m.embedding_dim >= 1, f"model.embedding_dim must be >= 1 for method ess, got {m.embedding_dim}")
        need(lo.k >= 1, f"loss.k must be >= 1, got {lo.k}")
        need(lo.tau > 0, f"loss.tau must be > 0, got {lo.tau}")
        need(lo.margin >= 0 and lo.reg_weight >= 0, "loss.margin and loss.reg_weight must be >= 0")
        need(lo.query_stride >= 1, f"loss.query_stride must be >= 1, got {lo.query_stride}")
        need(lo.warmup_steps >= 0, f"loss.warmup_steps must be >= 0, got {lo.warmup_steps}")
        need(lo.warmup_k is None or lo.warmup_k >= lo.k,
             f"loss.warmup_k={lo.warmup_k} must be >= loss.k={lo.k} (the warm-up starts with more negatives)")
        need(lo.warmup_steps == 0 or lo.warmup_k is not None, "loss.warmup_steps needs loss.warmup_k (the k to start from)")
        need(lo.tail_samples >= 0, f"loss.tail_samples must be >= 0, got {lo.tail_samples}")
        need(lo.tail_samples == 0 or lo.mode == "knn",
             f"loss.tail_samples={lo.tail_samples} needs loss.mode=knn (got {lo.mode}; the exact mode has no tail, random "
             "negatives are already uniform): for another mode, also set loss.tail_samples=0")
    need(m.output_stride in (8, 16), f"model.output_stride must be 8 or 16, got {m.output_stride}")
    need(m.class_encoder == "table" or m.method == "ess",
         f"model.class_encoder={m.class_encoder} needs model.method=ess (the baseline has C logits, no class embeddings)")
    need(m.class_encoder != "text" or m.text_features is not None,
         "model.class_encoder=text needs model.text_features=FILE (a C x D .npy/.pt; see esseg embed-class-names)")
    need(m.class_init == "random" or (m.method == "ess" and m.class_encoder == "table"),
         f"model.class_init={m.class_init} initialises the free class table: it needs model.method=ess and model.class_encoder=table")
    need(m.max_pixel_length is None or m.method != "ess" or (not m.unit_pixels and m.max_pixel_length > 0),
         f"model.max_pixel_length={m.max_pixel_length} caps free pixel lengths: it needs model.unit_pixels=false and a value > 0"
         + (" (with unit-length pixels, clear it: model.max_pixel_length=null)" if m.unit_pixels else ""))
    clear_cap = " and model.max_pixel_length=null" if m.max_pixel_length is not None else ""
    need(m.unit_pixels or m.method != "ess" or m.normalize,  # like embedding_dim, ignored by the baseline
         "model.unit_pixels=false keeps the pixel embeddings' length while the class table is normalised: it needs "
         f"model.normalize=true (for no normalisation at all, also set model.unit_pixels=true{clear_cap})")
    need(not m.learn_temperature or m.method == "ess",
         "model.learn_temperature=true needs model.method=ess (the baseline's logits have no temperature)")
    need(m.max_scale is None or m.max_scale > 0, f"model.max_scale must be > 0 or null, got {m.max_scale}")
    need(not m.learn_temperature or m.max_scale is None or m.max_scale * lo.tau >= 1,
         f"model.max_scale={m.max_scale} is below the initial scale 1 / loss.tau = {1 / lo.tau:.4g}; raise it or lower 1 / tau")
    need(o.class_embedding_lr_mult > 0, f"optim.class_embedding_lr_mult must be > 0, got {o.class_embedding_lr_mult}")
    need(o.temperature_lr_mult >= 0, f"optim.temperature_lr_mult must be >= 0, got {o.temperature_lr_mult}")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(o.backbone_lr_mult >= 0 and o.weight_decay >= 0, "optim.backbone_lr_mult and optim.weight_decay must be >= 0")
    beta1 = " (AdamW uses it as beta1)" if o.optimizer == "adamw" else ""
    for key in ("momentum", "class_embedding_momentum"):
        need(0 <= getattr(o, key) < 1, f"optim.{key} must be in [0, 1){beta1}, got {getattr(o, key)} (paper: 0.9 / 0.95)")
    for key in ("poly_power", "class_embedding_poly_power"):
        need(getattr(o, key) > 0, f"optim.{key} must be > 0, got {getattr(o, key)} (paper: 0.9 / 0.95)")
    need(0 <= o.backbone_bn_momentum <= 1, f"optim.backbone_bn_momentum must be in [0, 1], got {o.backbone_bn_momentum}")
    need(o.class_embedding_weight_decay >= 0, f"optim.class_embedding_weight_decay must be >= 0, got {o.class_embedding_weight_decay}")


def crop_hw(crop_size: int | list[int] | None) -> tuple[int, int] | None:
    """``crop_size`` as ``(height, width)`` (``None`` stays ``None``)."""
    if crop_size is None:
        return None
    return (crop_size, crop_size) if isinstance(crop_size, int) else (crop_size[0], crop_size[1])


__all__ = [
    "Config", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "TrainConfig",
    "MAX_YAML_NODES", "apply_overrides", "config_from_dict", "crop_hw", "load_config", "set_value", "short_repr", "valid_keys",
    "validate", "yaml_load",
]

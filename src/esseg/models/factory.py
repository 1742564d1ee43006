"""Build ESS and baseline models on top of segmentation_models_pytorch."""

from __future__ import annotations

from torch import nn

from esseg.errors import ConfigError, EssegError
from esseg.models.class_encoders import build_class_encoder
from esseg.models.segmenter import BaselineSegmenter, EmbeddingSegmenter


def _smp():
    import segmentation_models_pytorch as smp  # noqa: PLC0415

    return smp


def _architectures() -> dict[str, type]:
    return dict(_smp().MODEL_ARCHITECTURES_MAPPING)


def create_model(
    arch: str = "deeplabv3plus",
    encoder: str = "mobilenet_v2",
    num_classes: int = 19,
    embedding_dim: int | None = None,
    encoder_weights: str | None = None,
    output_stride: int = 16,
    atrous_rates: tuple[int, ...] = (12, 24, 36),
    normalize: bool = True,
    unit_pixels: bool = True,
    in_channels: int = 3,
    class_encoder: str = "table",
    class_encoder_options: dict | None = None,
    class_init: str = "random",
    learn_temperature: bool = False,
    tau: float = 0.05,
    max_scale: float | None = None,
    max_pixel_length: float | None = None,
    **kwargs,
) -> EmbeddingSegmenter | BaselineSegmenter:
    """Any segmentation_models_pytorch architecture/encoder as an ESS model or a baseline.

    ``embedding_dim=d`` gives an :class:`EmbeddingSegmenter` whose last conv has d channels
    (Sec. 3.1); ``embedding_dim=None`` gives a :class:`BaselineSegmenter` with C channels.
    Paper defaults: DeepLabV3+, output stride 16, ASPP dilations (12, 24, 36).

    Args:
        arch: smp architecture name (``deeplabv3plus``, ``unet``, ``fpn``, ...).
        encoder: smp/timm encoder name (``mobilenet_v2``, ``resnet50``, ...).
        num_classes: C. embedding_dim: d, or None for the baseline.
        encoder_weights: ``None`` (random init) or e.g. ``"imagenet"`` (downloads weights).
        output_stride, atrous_rates: DeepLabV3/V3+ only.
        normalize: ESS only: L2-normalise pixel and class embeddings.
        unit_pixels: ESS with ``normalize`` only: False normalises the class embeddings alone (a
            pixel's length becomes a learned per-pixel scale; see :class:`EmbeddingSegmenter`).
        max_pixel_length: with ``unit_pixels=False``, cap the pixel lengths at this value (None: no cap).
        class_encoder: ESS only: ``"table"`` (a free learned (C, d) table, the paper's),
            ``"attributes"`` or ``"text"`` (class embeddings computed from class descriptions,
            :mod:`esseg.models.class_encoders`).
        class_encoder_options: keyword arguments of the encoder, e.g. ``{"class_attributes":
            [["shape:a", "colour:red"], ...]}`` or ``{"text_features": "names.npy"}``.
        class_init: ESS free table only: ``"random"`` (the paper's) or ``"spread"`` (rows spread
            out on the sphere, :func:`~esseg.models.segmenter.spread_rows`).
        learn_temperature: ESS only: learn the loss's temperature (``model.log_scale``, from
            ``tau``; ``1 / tau`` bounded by ``max_scale``); see :class:`EmbeddingSegmenter`.
        **kwargs: passed to the smp model constructor.

    Returns:
        The model; ``model.config`` holds these arguments, enough to rebuild it.
    """
    archs = _architectures()
    key = arch.lower()
    if key not in archs:
        raise EssegError(f"unknown arch {arch!r}; known architectures: {', '.join(sorted(archs))}")
    encoders = _smp().encoders.get_encoder_names()
    if encoder not in encoders and not encoder.startswith("tu-"):
        raise EssegError(
            f"unknown encoder {encoder!r}; use one of segmentation_models_pytorch's encoders "
            f"(e.g. mobilenet_v2, resnet50, efficientnet-b0) or a timm encoder as 'tu-<name>'"
        )
    if num_classes < 2:
        raise EssegError(f"num_classes must be >= 2; got {num_classes}")
    encoder_options = dict(class_encoder_options or {})
    if embedding_dim is None and (class_encoder != "table" or encoder_options):
        raise ConfigError(f"class_encoder={class_encoder!r} needs an ESS model (embedding_dim); the baseline has C logits")
    if embedding_dim is None and (class_init != "random" or learn_temperature or not unit_pixels):
        raise ConfigError("class_init, learn_temperature and unit_pixels need an ESS model (embedding_dim); the baseline has C logits")
    if class_init != "random" and class_encoder != "table":
        raise ConfigError(f"class_init={class_init!r} initialises the free class table; class_encoder={class_encoder!r} has none "
                          "(use class_encoder=table or class_init=random)")
    extra = dict(kwargs)
    if key in ("deeplabv3", "deeplabv3plus"):
        extra.update(encoder_output_stride=output_stride, decoder_atrous_rates=tuple(atrous_rates))
    out_channels = embedding_dim if embedding_dim is not None else num_classes
    net: nn.Module = archs[key](
        encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=out_channels, **extra
    )
    if embedding_dim is None:
        model: EmbeddingSegmenter | BaselineSegmenter = BaselineSegmenter(net, num_classes)
    else:
        classes = build_class_encoder(class_encoder, num_classes, embedding_dim, **encoder_options)
        model = EmbeddingSegmenter(net, num_classes, embedding_dim, normalize=normalize, unit_pixels=unit_pixels,
                                   class_encoder=classes,
                                   class_init=class_init, learn_temperature=learn_temperature, tau=tau, max_scale=max_scale,
                                   max_pixel_length=max_pixel_length)
        encoder_options = classes.options() if classes is not None else {}
    model.config = dict(
        arch=arch, encoder=encoder, num_classes=num_classes, embedding_dim=embedding_dim,
        encoder_weights=encoder_weights, output_stride=output_stride, atrous_rates=list(atrous_rates),
        normalize=normalize, in_channels=in_channels, **kwargs,
    )
    if class_encoder != "table":  # a table model's config stays as before (old checkpoints compare equal)
        model.config.update(class_encoder=class_encoder, class_encoder_options=encoder_options)
    if class_init != "random":  # likewise: only the new options that are set
        model.config.update(class_init=class_init)
    if not unit_pixels:
        model.config.update(unit_pixels=False)
    if max_pixel_length is not None:
        model.config.update(max_pixel_length=max_pixel_length)
    if learn_temperature:
        model.config.update(learn_temperature=True, tau=tau, max_scale=max_scale)
    return model

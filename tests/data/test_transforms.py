import random

import numpy as np
import pytest
import torch
from PIL import Image

from esseg.data.base import IMAGENET_MEAN, IMAGENET_STD
from esseg.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    ToTensor,
    build_transforms,
)
from esseg.errors import ConfigError

IGNORE = 65535
IDS = np.array([0, 1, 300, 1283, 40000, 65534])  # ids above 255 must survive every step
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]], np.uint8)


def pattern(height=64, width=96, block=16, seed=0):
    """Image whose colour is a function of the label: colour = COLOURS[class slot]."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, len(IDS), (height // block, width // block)).repeat(block, 0).repeat(block, 1)
    return Image.fromarray(COLOURS[slots]), IDS[slots]


def to_rgb(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) * 255).permute(1, 2, 0).numpy()


def expected_colour(label: np.ndarray) -> np.ndarray:
    slot = np.searchsorted(IDS, np.where(label == IGNORE, 0, label))
    return COLOURS[slot].astype(np.float32)


def uniform_5x5(label: np.ndarray) -> np.ndarray:
    pad = np.pad(label, 2, constant_values=-1)  # crop borders: the neighbours outside are unknown
    h, w = label.shape
    windows = [pad[dy : dy + h, dx : dx + w] for dy in range(5) for dx in range(5)]
    return np.all([win == label for win in windows], axis=0)


@pytest.mark.parametrize("seed", range(12))
def test_scale_crop_flip_keep_image_and_label_aligned_exactly(seed):
    image, label = pattern(seed=seed)
    pipeline = Compose([RandomScale((0.5, 2.0), interpolation=Image.Resampling.NEAREST),
                        RandomCrop((40, 56), IGNORE), RandomHorizontalFlip(), ToTensor()])
    random.seed(seed)
    img, lab = pipeline(image, label)
    assert img.shape == (3, 40, 56) and lab.shape == (40, 56) and lab.dtype == torch.int64
    rgb, lab = to_rgb(img), lab.numpy()
    valid = lab != IGNORE
    np.testing.assert_allclose(rgb[valid], expected_colour(lab)[valid], atol=1e-3 * 255)
    np.testing.assert_allclose(rgb[~valid], np.broadcast_to(np.round(np.array(IMAGENET_MEAN) * 255), rgb[~valid].shape), atol=0.5)


@pytest.mark.parametrize("seed", range(12))
def test_default_train_pipeline_keeps_alignment_away_from_edges(seed):
    image, label = pattern(seed=100 + seed)
    random.seed(seed)
    img, lab = build_transforms(True, 48, IGNORE)(image, label)
    rgb, lab = to_rgb(img), lab.numpy()
    assert set(np.unique(lab)) <= set(IDS) | {IGNORE}  # nearest: no interpolated ids
    interior = uniform_5x5(lab) & (lab != IGNORE)
    assert interior.sum() > 100
    np.testing.assert_allclose(rgb[interior], expected_colour(lab)[interior], atol=3)


def test_flip_mirrors_both():
    image, label = pattern()
    random.seed(0)
    out_img, out_lab = RandomHorizontalFlip(p=1.0)(image, label)
    np.testing.assert_array_equal(np.asarray(out_img), np.asarray(image)[:, ::-1])
    np.testing.assert_array_equal(out_lab, label[:, ::-1])
    same_img, same_lab = RandomHorizontalFlip(p=0.0)(image, label)
    assert same_img is image and same_lab is label


def test_crop_pads_label_with_ignore_and_image_with_mean():
    image = Image.new("RGB", (5, 4), (10, 20, 30))
    label = np.full((4, 5), 7)
    random.seed(0)
    img, lab = RandomCrop((6, 8), ignore_index=255)(image, label)
    arr = np.asarray(img)
    assert img.size == (8, 6) and lab.shape == (6, 8)
    assert (lab[:4, :5] == 7).all() and (lab[4:] == 255).all() and (lab[:, 5:] == 255).all()
    assert (arr[:4, :5] == (10, 20, 30)).all() and (arr[4:] == (124, 116, 104)).all()


def test_same_seed_same_sample_different_seeds_differ():
    image, label = pattern()
    pipeline = build_transforms(True, 32, IGNORE)
    outputs = []
    for seed in (1, 1, 2):
        random.seed(seed)
        outputs.append(pipeline(image, label)[1])
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])


def test_random_scale_range_and_nearest_labels():
    image, label = pattern(32, 48, block=8)
    sizes = set()
    for seed in range(20):
        random.seed(seed)
        img, lab = RandomScale((0.5, 2.0))(image, label)
        assert img.size == (lab.shape[1], lab.shape[0]) and 16 <= lab.shape[0] <= 64
        assert set(np.unique(lab)) <= set(IDS)
        sizes.add(lab.shape)
    assert len(sizes) > 10


def test_colour_jitter_changes_only_the_image():
    image, label = pattern()
    torch.manual_seed(0)
    img, lab = ColorJitter(0.8, 0.8, 0.8)(image, label)
    assert lab is label and not np.array_equal(np.asarray(img), np.asarray(image))


def test_val_whole_keeps_size_and_crop_val_gives_crop_size():
    image, label = pattern(64, 96)
    img, lab = build_transforms(False, 48, IGNORE)(image, label)
    assert img.shape == (3, 64, 96) and torch.equal(lab, torch.from_numpy(label))
    img, lab = build_transforms(False, (40, 48), IGNORE, val_mode="crop_val")(image, label)
    assert img.shape == (3, 40, 48) and lab.shape == (40, 48)
    assert (lab != IGNORE).all()  # shorter side resized to 40 -> 40x60, centre crop needs no padding


def test_resize_and_center_crop():
    image, label = pattern(64, 96)
    img, lab = Resize(32)(image, label)
    assert img.size == (48, 32) and lab.shape == (32, 48)
    img, lab = Resize((10, 20))(image, label)
    assert img.size == (20, 10) and lab.shape == (10, 20)
    img, lab = CenterCrop((70, 20), IGNORE)(image, label)
    np.testing.assert_array_equal(lab[:64], label[:, 38:58])
    assert (lab[64:] == IGNORE).all()


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="unknown val_mode 'tiles'; use one of whole, crop_val"):
        build_transforms(False, 32, 255, val_mode="tiles")
    with pytest.raises(ConfigError, match="crop size must be a positive int"):
        build_transforms(True, (0, 32), 255)

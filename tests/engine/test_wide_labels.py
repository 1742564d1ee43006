"""Label maps of more than 65535 classes: 32-bit TIFF output."""

import numpy as np
from PIL import Image

from esseg.engine.predict import label_image, label_suffix


def test_label_maps_above_65535_classes_are_32_bit_tiffs(tmp_path):
    label = np.array([[0, 65535], [65536, 999_999]], dtype=np.int64)
    assert label_suffix(65535) == ".png" and label_suffix(65536) == ".tif"
    path = tmp_path / f"x_label{label_suffix(1_000_000)}"
    label_image(label, 1_000_000).save(path)
    assert np.array_equal(np.asarray(Image.open(path)), label)
    small = tmp_path / "y.png"
    label_image(label % 65536, 65535).save(small)
    assert np.asarray(Image.open(small)).max() == 65535

"""The config schema: defaults, shipped YAMLs, overrides and the errors users see."""

from pathlib import Path

import pytest

from esseg.engine.config import Config, config_from_dict, crop_hw, load_config, valid_keys
from esseg.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_defaults_train_ess_on_glyph_scenes():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.data.dataset == "glyph_scenes" and cfg.model.method == "ess"
    assert "loss.k" in valid_keys() and "train.iters" in valid_keys()


def test_configs_folder_has_every_paper_setting():
    names = {p.stem for p in CONFIGS}
    for stem in ("cityscapes_mobilenetv2", "cityscapes_resnet50", "voc_mobilenetv2", "ade20k_mobilenetv2",
                 "ade20k_resnet50", "cocostuff10k_resnet50", "coco_lvis_resnet50", "glyph_c20", "glyph_c200", "glyph_c2000"):
        assert {f"{stem}_ess", f"{stem}_baseline"} <= names, stem
    assert "demo" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    if path.stem.endswith("_baseline"):
        assert cfg.model.method == "baseline"
    elif path.stem.endswith("_ess") or path.stem == "demo":
        assert cfg.model.method == "ess"
    if cfg.data.dataset != "glyph_scenes":
        assert cfg.model.encoder_weights == "imagenet"


def test_paper_numbers_in_configs():
    by_name = {p.stem: load_config(p) for p in CONFIGS}
    cs = by_name["cityscapes_mobilenetv2_ess"]
    assert (cs.model.embedding_dim, cs.loss.k, cs.train.batch_size, crop_hw(cs.data.crop_size)) == (6, 7, 12, (400, 800))
    assert cs.optim.lr == pytest.approx(1e-3)
    ade = by_name["ade20k_resnet50_ess"]
    assert (ade.model.embedding_dim, ade.loss.k, ade.train.batch_size, ade.optim.lr) == (12, 6, 10, pytest.approx(1e-2))
    assert by_name["coco_lvis_resnet50_baseline"].train.batch_size == 2
    assert by_name["glyph_c2000_ess"].data.options["num_classes"] == 2000


def test_overrides_and_flag_updates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  k: 5\noptim:\n  lr: 1e-4\n")  # YAML reads 1e-4 as a string
    cfg = load_config(path, ["loss.k=9", "data.crop_size=[32, 48]", "data.options={num_classes: 20}"], {"train.iters": 3, "train.seed": None})
    assert cfg.loss.k == 9 and cfg.optim.lr == pytest.approx(1e-4) and cfg.train.iters == 3 and cfg.train.seed == 0
    assert crop_hw(cfg.data.crop_size) == (32, 48) and cfg.data.options == {"num_classes": 20}
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad, message", [
    ({"loss": {"kk": 3}}, r"unknown config key loss\.kk; valid keys in loss: k, tau"),
    ({"los": {}}, r"unknown config section 'los'; valid sections: data, model"),
    ({"train": {"iters": "many"}}, r"train\.iters must be int, got 'many'"),
    ({"train": {"amp": 1}}, r"train\.amp must be bool"),
    ({"model": {"method": "softmax"}}, r"model\.method must be one of 'ess', 'baseline'"),
    ({"train": {"batch_size": 0}}, r"train\.batch_size must be >= 1"),
    ({"data": {"crop_size": [1, 2, 3]}}, r"data\.crop_size must be an int or \[height, width\]"),
    ({"train": {"stop_at": 9, "iters": 4}}, r"train\.stop_at must be in \[1, train\.iters=4\]"),
])
def test_invalid_configs(bad, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(bad)


def test_invalid_override_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.iter'; valid keys: data\.dataset, .*train\.iters"):
        load_config(None, ["train.iter=3"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["train.iters"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")

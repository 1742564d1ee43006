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


@pytest.mark.parametrize("bad, message", [
    ({"optim": {"momentum": -0.1}}, r"optim\.momentum must be in \[0, 1\), got -0\.1"),
    ({"optim": {"momentum": 1.0, "optimizer": "adamw"}}, r"optim\.momentum must be in \[0, 1\) \(AdamW uses it as beta1\)"),
    ({"optim": {"class_embedding_momentum": 1.2}}, r"optim\.class_embedding_momentum must be in \[0, 1\)"),
    ({"optim": {"poly_power": 0}}, r"optim\.poly_power must be > 0, got 0"),
    ({"optim": {"class_embedding_poly_power": -1}}, r"optim\.class_embedding_poly_power must be > 0"),
    ({"optim": {"backbone_bn_momentum": 2}}, r"optim\.backbone_bn_momentum must be in \[0, 1\]"),
    ({"optim": {"temperature_lr_mult": -1}}, r"optim\.temperature_lr_mult must be >= 0, got -1"),
])
def test_optimiser_ranges_are_checked_before_training(bad, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(bad)


def test_set_reaches_keys_inside_mapping_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  options: &opts {num_classes: 8, size: 32}\n  val_options: *opts\n")
    cfg = load_config(path, ["data.options.num_classes=5000", "data.val_options.length=3", "data.options.extra.depth=2"])
    assert cfg.data.options == {"num_classes": 5000, "size": 32, "extra": {"depth": 2}}
    assert cfg.data.val_options == {"num_classes": 8, "size": 32, "length": 3}  # the alias was copied, not shared
    assert load_config(None, ["data.options.num_classes=20"]).data.options == {"num_classes": 20}
    for override, message in [
        ("data.crop_size.x=1", r"unknown config key 'data\.crop_size\.x': only mapping keys \(data\.options, data\.val_options\)"),
        ("train.iters.x=1", r"unknown config key 'train\.iters\.x': only mapping keys \(none in train\)"),
        ("data.optionz.x=1", r"unknown config key 'data\.optionz\.x'; valid keys"),
        ("data.options.=1", "has an empty part"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    with pytest.raises(ConfigError, match=r"cannot set 'data\.options\.a\.b': data\.options\.a is 5, not a mapping"):
        load_config(None, ["data.options={a: 5}", "data.options.a.b=1"])


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndata: *a{levels - 1}\n"


def test_hostile_config_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"train:\x00\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())  # 9**9 values once expanded
    loop = tmp_path / "loop.yaml"
    loop.write_text("data: &d {options: *d}\n")
    for path, message in [(binary, "is not a YAML text file"), (nul, "is not a YAML text file"),
                          (bomb, "YAML aliases expand to more than 100000 values"), (loop, "refers to its own anchor")]:
        with pytest.raises(ConfigError, match=message) as err:
            load_config(path)
        assert len(str(err.value)) < 300 and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="override 'data.options': YAML aliases expand"):
        load_config(None, ["data.options=" + _alias_bomb(8).replace("\n", ", ").join("{}")])


def test_error_messages_shorten_huge_values():
    huge = {"train": {"iters": "x" * 100_000}, "data": {"crop_size": list(range(10_000))}}
    for bad in (huge, {"data": ["y" * 100_000]}, {"z" * 100_000: {}}, {"data": {"crop_size": list(range(10_000))}}):
        with pytest.raises(ConfigError) as err:
            config_from_dict(bad)
        assert len(str(err.value)) < 400, str(err.value)[:500]


def test_dataset_option_errors_shorten_huge_values():
    from esseg.engine.data import build_split

    cfg = load_config(None, ["data.options={bogus: " + "x" * 100_000 + "}"])
    with pytest.raises(ConfigError, match=r"data\.options \{'bogus': 'xxx.*\.\.\..*'\} not accepted by dataset 'glyph_scenes'") as err:
        build_split(cfg, "train", train=True)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("bad, message", [
    ({"model": {"learn_temperature": True, "method": "baseline"}}, r"model\.learn_temperature=true needs model\.method=ess"),
    ({"model": {"learn_temperature": True, "max_scale": 5.0}, "loss": {"tau": 0.05}},
     r"model\.max_scale=5\.0 is below the initial scale 1 / loss\.tau = 20"),
    ({"model": {"max_scale": 0}}, r"model\.max_scale must be > 0 or null"),
    ({"model": {"class_init": "spread", "class_encoder": "attributes"}}, r"model\.class_init=spread initialises the free class table"),
    ({"model": {"class_init": "sphere"}}, r"model\.class_init must be one of 'random', 'spread'"),
    ({"model": {"unit_pixels": False, "normalize": False}}, r"model\.unit_pixels=false .* needs model\.normalize=true"),
])
def test_temperature_and_class_init_keys_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(bad)


def test_temperature_and_class_init_defaults_keep_the_paper_formulation():
    m = Config().model
    assert (m.learn_temperature, m.class_init, Config().optim.temperature_lr_mult) == (False, "random", 1.0)
    assert m.unit_pixels and m.normalize
    cfg = config_from_dict({"model": {"learn_temperature": True, "max_scale": None, "class_init": "spread"}})
    assert cfg.model.learn_temperature and cfg.model.max_scale is None and cfg.model.class_init == "spread"

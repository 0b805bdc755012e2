import pytest

from tests.checkpoints.reference import CONFIGS, make_reference


@pytest.fixture(scope="session", params=sorted(CONFIGS))
def ref(request):
    """A randomised tiny diffusers Wan transformer with its reference outputs (one per tiny shape)."""
    return make_reference(request.param)


@pytest.fixture(scope="session")
def ref_small():
    """The first tiny shape only, for tests that need one model."""
    return make_reference("h2x12")


@pytest.fixture(scope="session")
def wan_base(tmp_path_factory):
    """A Wan2.1 original folder with tiny random weights (transformer, VAE, umT5 + tokenizer)."""
    from tests.checkpoints.folder_layouts import write_wan_original

    return write_wan_original(tmp_path_factory.mktemp("wan") / "Wan2.1-T2V-tiny")


@pytest.fixture(scope="session")
def diffusers_base(tmp_path_factory):
    """A diffusers Wan pipeline folder with tiny random weights."""
    from tests.checkpoints.folder_layouts import write_diffusers

    return write_diffusers(tmp_path_factory.mktemp("diffusers") / "Wan2.1-T2V-tiny-Diffusers")

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

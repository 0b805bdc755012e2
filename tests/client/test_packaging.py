"""Both packages ship their type hints (PEP 561 ``py.typed``) and export an explicit public API."""
from __future__ import annotations

import importlib
from importlib.resources import files

import pytest


@pytest.mark.parametrize("package", ["streamgen", "streamgen_client"])
def test_typed_with_explicit_exports(package):
    assert files(package).joinpath("py.typed").is_file()
    module = importlib.import_module(package)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_client_exports_resolve_to_their_modules():
    import streamgen_client
    from streamgen_client.base import StreamEnded
    from streamgen_client.keyscript import KeyScript
    from streamgen_client.sync import SyncClient

    assert streamgen_client.StreamEnded is StreamEnded and issubclass(StreamEnded, ConnectionError)
    assert streamgen_client.KeyScript is KeyScript and streamgen_client.SyncClient is SyncClient
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(streamgen_client, "no_such_name")

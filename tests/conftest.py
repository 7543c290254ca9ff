"""Fixtures shared by the test modules."""
import pytest

from hostd.store import EmbeddedStore


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    """A real embedded store (nx-27017) for one test module: its ``mongodb://`` URL."""
    with EmbeddedStore(tmp_path_factory.mktemp("store")) as store:
        yield store.url

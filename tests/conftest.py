import pytest

from tests.support import require_netns
from tools.lab import Lab


@pytest.fixture
def lab():
    """A fresh Lab of network namespaces, torn down after the test."""
    require_netns()
    with Lab() as lab:
        yield lab

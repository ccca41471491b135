import pytest

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _needs_root(root_netns: None) -> None:
    """Every test here builds real namespaces and TAP devices."""

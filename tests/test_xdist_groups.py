"""The xdist groups of tests/conftest.py reach pytest-xdist: under `--dist loadgroup` (CI's
command) a test sharing a module-scoped fixture carries its module's group in its node id, which
is what sends the module's tests to one worker (else each worker builds the fixture again, as
each built its own miniature before the hook ran first)."""
import pytest


@pytest.fixture(scope="module")
def shared():
    return object()


def test_a_module_fixture_groups_its_tests_on_one_worker(request, shared):
    if not getattr(request.config, "workerinput", None) or not request.config.getvalue("loadgroup"):
        pytest.skip("only under pytest-xdist --dist loadgroup (CI's command)")
    assert request.node.nodeid.endswith("@tests/test_xdist_groups.py"), request.node.nodeid

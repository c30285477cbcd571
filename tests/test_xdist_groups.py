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


def test_the_long_groups_are_handed_out_first(request):
    """The collection xdist schedules from (conftest.longest_first): heavy, then Slurm, then
    anything slow, then the fast tests; and xdist's own reorder by group size is off."""
    from conftest import rank_of, xdist_group_of

    ranks, seen = [], {}
    for item in request.session.items:
        group = xdist_group_of(item)
        seen[group] = min(seen.get(group, rank_of(item)), rank_of(item))  # a group's place is its first test's
        ranks.append(group)
    order = [seen[g] for g in dict.fromkeys(ranks)]
    assert order == sorted(order), order
    if hasattr(request.config.option, "loadscopereorder"):
        assert request.config.option.loadscopereorder is False

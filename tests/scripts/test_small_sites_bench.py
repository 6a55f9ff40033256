"""``scripts/bench/small_sites.py``: federations of uniformly small sites (``SimConfig.site_size``)
and which free-rider test zeroed each site-round (``RoundRecord.why``), with its issue-12 bar."""

from __future__ import annotations

import pytest

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import load_bundled
from scripts.bench import _sim, small_sites

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_site_size_keeps_that_many_images_of_each_share() -> None:
    train = load_bundled().train
    whole = _sim.site_splits(train, _sim.SimConfig(sites=5, alpha=100.0))
    small = _sim.site_splits(train, _sim.SimConfig(sites=5, alpha=100.0, site_size=20))
    assert [len(d) for d in small] == [20] * 5
    assert all(len(d) > 400 for d in whole)
    with pytest.raises(ConfigError, match="site_size must be positive"):
        _sim.SimConfig(site_size=0)


def test_the_screens_own_details_name_their_test() -> None:
    assert small_sites.which_test("the update is zero") == "median"
    assert small_sites.which_test("norm 0.1 is 0.50% of the median 20 (below 1%)") == "median"
    assert (
        small_sites.which_test(
            "norm 0.3 is 0.030% of the global model's 1e+03 (below 0.1% x (20 claimed / "
            "median 85) ** 2 = 5.54e-05)"
        )
        == "model"
    )
    assert small_sites.which_test("norm 1 is 0.5% of its own earlier update's 200 (x)") == "own"
    assert small_sites.which_test("a stale copy of the global delta") == "other"
    assert small_sites.parse_grid("5:20,100:all") == [(5, 20), (100, None)]


def test_a_small_federation_is_measured_and_held_to_the_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """5 sites of 20 images, seed 0, 2 rounds: under the rule before ``tiny_size_reference``
    most honest site-rounds are zeroed by the model floor (the bar fails, exit 1); now none."""
    argv = ["--grid", "5:20", "--seeds", "0-0", "--rounds", "2"]
    assert small_sites.main([*argv, "--rule", "before"]) == 1
    before = capsys.readouterr().out.splitlines()[2].split()
    assert before[:4] == ["5", "20..20", "10", before[3]] and int(before[3]) >= 5
    assert small_sites.main(argv) == 0
    now = capsys.readouterr().out.splitlines()[2].split()
    assert now[:4] == ["5", "20..20", "10", "0"]

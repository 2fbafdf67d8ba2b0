from collections import Counter
from itertools import groupby

import pytest

from lmc_ray.execution import schedule


@pytest.mark.parametrize("n", [2, 3, 4, 7, 10, 25])
def test_each_model_owns_about_half_its_pairs(n):
    owned = Counter(schedule.owner(a, b, n) for a, b in schedule.all_pairs(n))
    assert sum(owned.values()) == n * (n - 1) // 2
    assert all(abs(owned[m] - (n - 1) / 2) <= 0.5 for m in range(n))


@pytest.mark.parametrize("n, actors", [(4, 2), (10, 3), (25, 4), (7, 7)])
def test_plan_covers_every_pending_pair_once_grouped_by_partner(n, actors):
    residents = schedule.assign_models(n, actors)
    assert sorted(m for r in residents for m in r) == list(range(n))
    pending = set(schedule.all_pairs(n)) - {(0, 1)}
    queues = schedule.queues(n, residents, pending)
    flat = [p for q in queues for p in q]
    assert sorted(flat) == sorted(pending)
    for q, mine in zip(queues, residents):
        foreign = [next((m for m in (b, a) if m not in mine), -1) for a, b in q]
        runs = [k for k, _ in groupby(foreign)]
        assert len(runs) == len(set(runs))  # each partner fetched once per actor
    sizes = [len(q) for q in queues]
    assert max(sizes) - min(sizes) <= 2


def test_queues_stay_balanced_when_n_is_not_a_multiple_of_the_actors():
    for n in range(3, 61):
        for actors in range(1, 9):
            queues = schedule.queues(n, schedule.assign_models(n, actors), set(schedule.all_pairs(n)))
            sizes = [len(q) for q in queues]
            assert max(sizes) - min(sizes) <= 2, (n, actors, sizes)


def test_chosen_pairs_all_anchors_and_a_file(tmp_path):
    import pytest

    from lmc_ray.errors import ConfigError

    names = ["m0", "m1", "m2", "m3"]
    assert schedule.chosen_pairs(names, "all") == schedule.all_pairs(4)
    assert schedule.chosen_pairs(names, {"anchors": ["m2"]}) == [(0, 2), (1, 2), (2, 3)]
    assert schedule.chosen_pairs(names, {"anchors": ["m0", "m3"]}) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    f = tmp_path / "pairs.txt"
    f.write_text("# some pairs\nm3,m1\nm0 m2\n\nm1\tm3\n")
    assert schedule.chosen_pairs(names, {"file": str(f)}) == [(0, 2), (1, 3)]
    f.write_text("m0,m9\n")
    with pytest.raises(ConfigError, match="line 1: no model named 'm9'"):
        schedule.chosen_pairs(names, {"file": str(f)})

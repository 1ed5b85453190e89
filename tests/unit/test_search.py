import pytest

from edgeft.config import TrainConfig, build_config
from edgeft.errors import ConfigError
from edgeft.search import better, parse, trials


def test_parse_search_specs_types_each_parameter():
    assert parse(["lr=1e-5,5e-5", "batch_size=16,32"]) == {"lr": [1e-5, 5e-5], "batch_size": [16, 32]}


@pytest.mark.parametrize("spec", ["dropout=0.1", "lr", "lr=", "batch_size=a,b"])
def test_parse_search_rejects_bad_specs(spec):
    with pytest.raises(ValueError):
        parse([spec])


def test_trials_grid_and_seeded_random_subset():
    space = {"lr": [1e-5, 5e-5, 1e-4], "batch_size": [16, 32]}
    grid = trials(TrainConfig(), space, None, 0)
    assert len(grid) == 6 and {"lr": 1e-5, "batch_size": 16} in grid
    assert all(isinstance(t["batch_size"], int) for t in grid)
    sub = trials(TrainConfig(), space, 3, seed=7)
    assert len(sub) == 3 and sub == trials(TrainConfig(), space, 3, seed=7) and all(t in grid for t in sub)
    assert trials(TrainConfig(), None, None, 0) == [{}]


def test_better_knows_which_metrics_go_down():
    assert better(0.9, 0.8, "validation_accuracy") and not better(0.7, 0.8, "validation_macro_f1")
    assert better(0.1, 0.2, "validation_rmse") and better(0.1, 0.2, "validation_loss")


def test_config_refuses_unsearchable_keys_and_wrong_metric_for_task():
    with pytest.raises(ConfigError, match="cannot search over"):
        build_config({"search": {"dropout": [0.1]}})
    with pytest.raises(ConfigError, match="does not apply to regression"):
        build_config({"task": "regression", "train": {"best_metric": "accuracy"}})

"""Spec dicts (the JSON spec-file format) to SweepSpec messages: no coordinator needed."""

import json

import pytest
from sweep_client import BUILTIN_VARIANTS, load_spec, parse_seeds, spec_from_dict, sweep_pb2
from sweep_client.spec import param_value

BUILTIN = {
    "name": "py",
    "variants": ["normal_lr1e-3", "natural_softmax"],
    "seeds": "0..2",
    "epochs": 2,
    "batch_size": 8,
    "data": {"train_limit": 64, "test_limit": 32},
}


def test_builtin_spec_converts_field_by_field():
    spec = spec_from_dict(
        dict(
            BUILTIN,
            learning_rates={"natural_softmax": 0.002},
            seed_offsets={"natural_softmax": 1_000_000},
            max_attempts=5,
            data={"train_limit": 64, "test_limit": 32, "augment": True, "width_multiplier": 0.5, "bn_group": 4},
        )
    )
    assert spec.name == "py"
    assert list(spec.variants) == ["normal_lr1e-3", "natural_softmax"]
    assert list(spec.seeds) == [0, 1]
    assert (spec.epochs, spec.batch_size, spec.max_attempts) == (2, 8, 5)
    assert dict(spec.learning_rates) == {"natural_softmax": 0.002}
    assert dict(spec.seed_offsets) == {"natural_softmax": 1_000_000}
    d = spec.data
    assert (d.train_limit, d.test_limit, d.augment, d.width_multiplier, d.bn_group) == (64, 32, True, 0.5, 4)
    assert not spec.HasField("command") and not spec.HasField("objective")


@pytest.mark.parametrize(
    "text, seeds",
    [("0..5", [0, 1, 2, 3, 4]), ("2..=4", [2, 3, 4]), ("0,1,7", [0, 1, 7]), (" 7, 3,9 ", [7, 3, 9]), ("5", [5])],
)
def test_seed_texts(text, seeds):
    assert parse_seeds(text) == seeds
    assert list(spec_from_dict(dict(BUILTIN, seeds=text)).seeds) == seeds


@pytest.mark.parametrize("text", ["5..5", "a..3", "1,x", "", "0..20000", "-1..3", "1.5", "18446744073709551615..=18446744073709551615"])
def test_bad_seed_texts(text):
    with pytest.raises(ValueError, match=r"^seeds"):
        parse_seeds(text)


def test_seed_lists_and_defaults():
    spec = spec_from_dict({"name": "x", "seeds": [3, 1]})
    assert list(spec.seeds) == [3, 1]
    # Neither variants nor a command: all five built-in variants, as `coordinator submit --spec`.
    assert tuple(spec.variants) == BUILTIN_VARIANTS
    assert (spec.epochs, spec.batch_size) == (0, 0)  # left to the coordinator to refuse
    # Keys set to None count as left out.
    assert spec_from_dict({"name": "x", "seeds": [1], "data": None, "epochs": None}).epochs == 0


def test_command_spec():
    spec = spec_from_dict(
        {
            "name": "cmd",
            "seeds": "0..2",
            "epochs": 10,
            "command": {
                "template": "python3 train.py --lr {lr} --depth {depth} --seed {seed}",
                "grid": {"depth": [3, 5], "opt": ["adam", "sgd"], "lr": [0.001, 1e-05], "bn": [True, False]},
                "samples": 4,
                "distributions": {
                    "wd": {"log_uniform": [1e-6, 1e-2]},
                    "drop": {"uniform": [0, 0.5]},
                    "width": {"int_uniform": [16, 64]},
                    "act": {"choice": ["relu", "gelu", 1]},
                },
                "workdir": "runs",
                "env": {"OMP_NUM_THREADS": "1"},
                "timeout_seconds": 3600,
            },
            "objective": {"metric": "val_loss", "mode": "min"},
        }
    )
    assert list(spec.variants) == []  # a command sweep has no built-in variants
    c = spec.command
    assert c.template.startswith("python3 train.py")
    assert list(c.grid["depth"].values) == ["3", "5"]
    assert list(c.grid["lr"].values) == ["0.001", "0.00001"]
    assert list(c.grid["bn"].values) == ["true", "false"]
    assert list(c.grid["opt"].values) == ["adam", "sgd"]
    assert c.samples == 4
    assert c.distributions["wd"].WhichOneof("kind") == "log_uniform"
    assert (c.distributions["wd"].log_uniform.low, c.distributions["wd"].log_uniform.high) == (1e-6, 1e-2)
    assert c.distributions["drop"].uniform.high == 0.5
    assert c.distributions["width"].int_uniform.low == 16
    assert list(c.distributions["act"].choice.values) == ["relu", "gelu", "1"]
    assert (c.workdir, dict(c.env), c.timeout_seconds) == ("runs", {"OMP_NUM_THREADS": "1"}, 3600)
    assert spec.objective.metric == "val_loss"
    assert spec.objective.mode == sweep_pb2.Objective.MODE_MIN
    # Left out, the mode is max, as the CLI writes it.
    default = spec_from_dict({"name": "x", "seeds": [0], "objective": {"metric": "acc"}}).objective
    assert default.mode == sweep_pb2.Objective.MODE_MAX


@pytest.mark.parametrize(
    "value, text",
    [
        (3, "3"), (-7, "-7"), (0.001, "0.001"), (1e-05, "0.00001"), (2.0, "2"), (100.0, "100"),
        (0.1, "0.1"), (2.5e-4, "0.00025"), (1e20, "100000000000000000000"), (-0.0, "-0"),
        (1 / 3, "0.3333333333333333"), ("0.001", "0.001"), (True, "true"), (False, "false"),
    ],
)
def test_param_values_are_written_as_the_cli_writes_them(value, text):
    """Rust's f64 Display (what `coordinator submit --spec` makes of a JSON number): shortest
    round-trip digits, no exponent, no trailing ".0"."""
    assert param_value(value, "v") == text


@pytest.mark.parametrize(
    "change, field",
    [
        ({"epoch": 4}, "epoch"),
        ({"name": 3}, "name"),
        ({"name": None}, "name"),
        ({"seeds": None}, "seeds"),
        ({"seeds": [1, -1]}, r"seeds\[1\]"),
        ({"seeds": [True]}, r"seeds\[0\]"),
        ({"seeds": []}, "seeds"),
        ({"seeds": 5}, "seeds"),
        ({"variants": "natural_softmax"}, "variants"),
        ({"variants": [1]}, r"variants\[0\]"),
        ({"epochs": "2"}, "epochs"),
        ({"epochs": 2.0}, "epochs"),
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1 << 32}, "epochs"),
        ({"batch_size": True}, "batch_size"),
        ({"learning_rates": {"natural_softmax": "0.1"}}, "learning_rates.natural_softmax"),
        ({"learning_rates": {"natural_softmax": float("nan")}}, "learning_rates.natural_softmax"),
        ({"learning_rates": []}, "learning_rates"),
        ({"seed_offsets": {"natural_softmax": 1.5}}, "seed_offsets.natural_softmax"),
        ({"data": {"train_limit": 64, "augmentation": True}}, "data.augmentation"),
        ({"data": {"augment": "yes"}}, "data.augment"),
        ({"data": {"width_multiplier": "1"}}, "data.width_multiplier"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"command": {"grid": {}}}, "command.template"),
        ({"command": {"template": "x", "gird": {}}}, "command.gird"),
        ({"command": {"template": "x", "grid": {"lr": 0.1}}}, "command.grid.lr"),
        ({"command": {"template": "x", "grid": {"lr": [None]}}}, r"command.grid.lr\[0\]"),
        ({"command": {"template": "x", "grid": {"flag": [[1]]}}}, r"command.grid.flag\[0\]"),
        ({"command": {"template": "x", "distributions": {"n": {"int_uniform": [1, 2.5]}}}}, r"command.distributions.n.int_uniform\[1\]"),
        ({"command": {"template": "x", "grid": {"lr": [float("inf")]}}}, r"command.grid.lr\[0\]"),
        ({"command": {"template": "x", "distributions": {"lr": {"normal": [0, 1]}}}}, "command.distributions.lr.normal"),
        ({"command": {"template": "x", "distributions": {"lr": {}}}}, "command.distributions.lr"),
        (
            {"command": {"template": "x", "distributions": {"lr": {"uniform": [0, 1], "choice": ["a"]}}}},
            "command.distributions.lr",
        ),
        ({"command": {"template": "x", "distributions": {"lr": {"uniform": [0]}}}}, "command.distributions.lr.uniform"),
        ({"command": {"template": "x", "distributions": {"lr": {"uniform": [0, "1"]}}}}, r"command.distributions.lr.uniform\[1\]"),
        ({"command": {"template": "x", "env": {"A": 1}}}, "command.env.A"),
        ({"command": {"template": "x", "timeout_seconds": 1.5}}, "command.timeout_seconds"),
        ({"command": "python3 train.py"}, "command"),
        ({"objective": {"metric": "val_acc", "mode": "maximum"}}, "objective.mode"),
        ({"objective": {"mode": "max"}}, "objective.metric"),
        ({"objective": {"metric": "a", "direction": "max"}}, "objective.direction"),
    ],
)
def test_bad_specs_name_the_field(change, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        spec_from_dict(dict(BUILTIN, **change))


def test_not_a_dict():
    with pytest.raises(ValueError, match="^spec:"):
        spec_from_dict(["name"])  # type: ignore[arg-type]


def test_load_spec_reads_a_json_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(BUILTIN))
    assert load_spec(path) == spec_from_dict(BUILTIN)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_spec(path)


def test_example_sweep_file_is_a_valid_spec():
    """examples/cifar10_torch/sweep.json is in the format this package reads."""
    from conftest import REPO_ROOT

    path = REPO_ROOT / "examples" / "cifar10_torch" / "sweep.json"
    if not path.exists():
        pytest.skip(f"no {path}")
    spec = load_spec(path)
    assert spec.name == "torch-natural-softmax"
    assert list(spec.seeds) == [0, 1, 2, 3, 4]
    assert sorted(spec.command.grid["loss"].values) == ["natural_softmax", "normal"]
    assert "{loss}" in spec.command.template and "{seed}" in spec.command.template

from __future__ import annotations

import pytest
import yaml

from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import config_keys, save_config
from cnnlab.core.yamlio import load_yaml, parse_set
from cnnlab.workflows.resolve import build_config


def test_defaults_yaml_flags_and_set_layer_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  name: mlp\noptim:\n  lr: 0.01\ntrain:\n  epochs: 4\n")
    cfg = build_config(load_yaml(f), {"optim.lr": 0.05, **parse_set(["model.hidden=[64, 32]", "train.seed=7"])})
    assert cfg.model.name == "mlp" and cfg.model.hidden == [64, 32]
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 4 and cfg.train.seed == 7
    assert cfg.data.source == "fashion-mnist" and cfg.optim.name == "adam"


def test_saved_config_round_trips(tmp_path):
    cfg = build_config(None, {"data.source": "digits", "model.dropout": 0.1, "data.split": [0.7, 0.2, 0.1]})
    save_config(cfg, tmp_path / "config.yaml")
    again = build_config(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("optim.lr", -0.1, "invalid value for optim.lr: -0.1 (Input should be greater than 0)"),
        ("model.name", "resnet9000", "invalid value for model.name: 'resnet9000' (unknown model; choose from"),
        ("data.source", "/no/such/dir", "invalid value for data.source: '/no/such/dir' (not a built-in dataset"),
        ("data.split", [0.5, 0.1, 0.1], "invalid value for data.split"),
        ("optim.name", "lion", "unknown optimizer"),
        ("train.device", "tpu", "must be auto, cpu, cuda, cuda:N or mps"),
        ("data.channels", 2, "invalid value for data.channels: 2"),
    ],
)
def test_bad_values_name_field_value_and_what_is_allowed(key, value, expected):
    with pytest.raises(CnnlabError) as e:
        build_config(None, {key: value})
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_keys_are_refused_in_set_and_yaml(tmp_path):
    with pytest.raises(CnnlabError, match="unknown config key 'optim.learning_rate'; known keys: data.source"):
        build_config(None, {"optim.learning_rate": 1})
    with pytest.raises(CnnlabError, match="unknown config key 'train.epoch'"):
        build_config({"train": {"epoch": 3}})
    assert "optim.lr" in config_keys() and "train.patience" in config_keys()


def test_set_parsing_and_errors():
    assert parse_set(["a.b=3", "c.d=[1,2]", "e.f=hello", "g.h="]) == {
        "a.b": 3,
        "c.d": [1, 2],
        "e.f": "hello",
        "g.h": None,
    }
    with pytest.raises(CnnlabError, match="KEY=VALUE"):
        parse_set(["novalue"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(CnnlabError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(CnnlabError, match="not valid YAML"):
        load_yaml(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CnnlabError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_a_key_given_twice_in_a_yaml_file_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently: a second `pruner:` in a sweep spec, or
    `lr:` twice in a config, would quietly replace the first."""
    from cnnlab.core.yamlio import read_yaml_file, safe_yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: 0.1\n  name: sgd\n  lr: 0.01\n")
    with pytest.raises(CnnlabError, match=r"c.yaml': key 'lr' is given twice \(lines 2 and 4\)"):
        read_yaml_file(cfg, "config")
    assert safe_yaml("a: {lr: 1}\nb: {lr: 2}", "x") == {"a": {"lr": 1}, "b": {"lr": 2}}  # per mapping

"""The command line is thin: each command's handler makes one api call (building the config from
the flags aside), every config flag comes from the schema with the schema's default, and no cli
file is longer than 400 lines."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

from cnnlab import api
from cnnlab.cli.flags import HIDDEN, config_overrides, flag_of, schema_default
from cnnlab.cli.main import build_parser, handlers
from cnnlab.core.schema import Config, build_config, config_keys

CLI = Path(__file__).resolve().parents[2] / "src" / "cnnlab" / "cli"


def _api_calls(fn) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "api":
                calls.append(node.func.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("_"):
            helper = inspect.getmodule(fn).__dict__[node.func.id]  # a private helper counts as the handler's own
            if callable(helper) and inspect.isfunction(helper):
                calls += _api_calls(helper)
    return calls


def test_every_command_is_one_api_call():
    table = handlers()
    assert len(table) == 19 and {"train", "predict", "data inspect", "data shard", "study"} <= set(table)
    for command, handler in table.items():
        # building the config, a plan or a settings value is parsing
        calls = [c for c in _api_calls(handler) if c != "build_config" and not inspect.isclass(getattr(api, c))]
        assert len(set(calls)) == 1, f"{command}: calls {calls}"
        assert calls[0] in api.EXPORTS, f"{command}: api.{calls[0]} is not a public api name"


def test_cli_files_are_short_and_restate_no_config_default():
    for path in CLI.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path
    parser = build_parser()
    args = parser.parse_args(["train"])
    assert config_overrides(args) == {}  # no flag carries a value of its own: the schema's defaults apply
    help_text = " ".join(parser._subparsers._group_actions[0].choices["train"].format_help().split())
    for key in ("train.batch_size", "optim.lr", "data.split", "train.monitor", "data.max_pixels"):
        shown = schema_default(key)
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else str(shown)
        assert f"(default {shown})" in help_text, key


def test_every_config_field_has_a_flag_that_sets_it():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    missing = [k for k in config_keys() if k not in HIDDEN and flag_of(k) not in flags]
    assert not missing, missing
    assert build_config(None, config_overrides(parser.parse_args(["train", "--batch-size", "auto"]))).train.auto_batch
    args = parser.parse_args(
        [
            "train",
            "--lr",
            "0.01",
            "--hidden",
            "64,32",
            "--no-pretrained",
            "--threads",
            "2",
            "--fine-tune",
            "2,1",
            "--augment-option",
            "rotation=20",
            "--split",
            "0.7,0.2,0.1",
        ]
    )
    assert config_overrides(args) == {
        "optim.lr": 0.01,
        "model.hidden": [64, 32],
        "model.pretrained": False,
        "train.threads": 2,
        "model.fine_tune": [2, 1],
        "data.augment_options": {"rotation": 20},
        "data.split": [0.7, 0.2, 0.1],
    }
    for section, field in Config.model_fields.items():
        for name, info in field.annotation.model_fields.items():
            assert info.description, f"{section}.{name} has no description for its --help"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"]])
def test_help_imports_no_pytorch(argv):
    import subprocess
    import sys

    code = (
        f"import sys\nfrom cnnlab.cli.main import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]


def test_an_unknown_flag_is_suggested_only_when_the_suggestion_is_another_flag(capsys):
    from cnnlab.cli import main

    with pytest.raises(SystemExit, match="2"):
        main(["export", "run", "-q"])  # -q exists, but not for export
    err = capsys.readouterr().err
    assert "-q belongs to other commands" in err and "did you mean '-q'" not in err
    with pytest.raises(SystemExit, match="2"):
        main(["train", "--epoch", "3"])
    assert "did you mean '--epochs'" in capsys.readouterr().err


def _subparser(command: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[command]


SETTINGS_OF = {  # command → its settings model (cnnlab.core.settings)
    "study": "StudySettings", "cv": "CvSettings", "sweep": "SweepSettings", "evaluate": "EvaluateSettings",
    "predict": "PredictSettings", "export": "ExportSettings", "serve": "ServeSettings", "board": "BoardSettings",
    "explain": "ExplainSettings", "lr-find": "LrFindSettings",
}  # fmt: skip


@pytest.mark.parametrize("command", list(SETTINGS_OF))
def test_a_workflows_flags_are_generated_from_its_settings_and_restate_no_default(command):
    """Each setting of a workflow is written once, as a field of its settings model: the parser has one
    flag per field, every flag defaults to "not given" (so the field's default applies), and the
    "(default …)" a help shows is the field's own."""
    from cnnlab.cli.flags import SETTINGS_DEST
    from cnnlab.core.settings import StudySettings

    settings = getattr(api, SETTINGS_OF[command])
    parser = _subparser(command)
    actions = {a.dest: a for a in parser._actions if a.dest.startswith(SETTINGS_DEST)}
    assert set(actions) == {SETTINGS_DEST + name for name in settings.model_fields}
    flags = {s for a in actions.values() for s in a.option_strings}
    others = [a for a in parser._actions if not a.dest.startswith(SETTINGS_DEST)]
    assert not [s for a in others for s in a.option_strings if s in flags]  # no setting has a second flag
    for name, info in settings.model_fields.items():
        action = actions[SETTINGS_DEST + name]
        assert action.default is None, f"--{name} restates a default: {action.default!r}"
        default = info.get_default()
        if default is not None and not isinstance(default, bool):
            shown = (info.json_schema_extra or {}).get("shown", default)
            assert f"(default {shown})" in action.help, name
    if settings is StudySettings:
        assert StudySettings.of(data="d").budget == 1200 == StudySettings.of(data="d", budget="20m").budget  # 20m
        assert StudySettings.of(data="digits").seed == Config().train.seed  # the config's default, not a copy


def test_the_study_workflow_restates_no_setting_default():
    """The defaults the study once restated in its code ('20m', `batch_size or 128`, `device or
    "auto"`, "warn") are read from its settings instead."""
    run = (CLI.parent / "workflows" / "study" / "run.py").read_text()
    for restated in ('"20m"', "or 128", 'or "auto"', '"warn"'):
        assert restated not in run, restated


def test_every_public_workflow_entry_takes_at_most_4_parameters():
    entries = [name for name, module in api.EXPORTS.items() if module.startswith("cnnlab.workflows")]
    functions = [getattr(api, name) for name in entries if inspect.isfunction(getattr(api, name))]
    assert len(functions) >= 20
    wide = {f.__name__: len(inspect.signature(f).parameters) for f in functions}
    assert {k: n for k, n in wide.items() if n > 4} == {}


def test_every_api_function_returns_a_typed_value():
    """Issue 44: no api function returns a bare dict, a list of dicts or Any; its result is a model or
    dataclass whose fields say what it holds (None for the servers, which run until stopped)."""
    untyped = {}
    for name in api.EXPORTS:
        value = getattr(api, name)
        if not inspect.isfunction(value):
            continue
        returned = str(inspect.signature(value).return_annotation)
        if (
            returned == str(inspect.Signature.empty)
            or "Any" in returned
            or returned.startswith(("dict[str, A", "list[dict"))
        ):
            untyped[name] = returned
    assert untyped == {}


def test_settings_refuse_a_boolean_count_an_empty_text_and_an_unknown_name_in_one_line():
    from cnnlab.core.errors import CnnlabError
    from cnnlab.core.settings import CvSettings, StudySettings, SweepSettings

    for model, given, said in (
        (StudySettings, {"data": "d", "seed": True}, "--seed True"),
        (StudySettings, {"data": "d", "seeds": 2.5}, "--seeds 2.5"),
        (StudySettings, {"data": "d", "models": ""}, "--models is empty"),
        (StudySettings, {"data": "d", "out": "  "}, "--out is empty"),
        (StudySettings, {"data": "d", "nonsense": 1}, "no setting 'nonsense'"),
        (CvSettings, {"repeats": False}, "--repeats False"),
        (SweepSettings, {"spec": "s.yaml", "storage": ""}, "--storage is empty"),
        (SweepSettings, {"spec": "s.yaml", "workers": "2"}, "--workers '2'"),
    ):
        with pytest.raises(CnnlabError) as e:
            model.of(**given)
        assert said in str(e.value) and "\n" not in str(e.value), str(e.value)

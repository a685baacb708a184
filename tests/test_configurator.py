import pytest

import configurator
from configurator import CramError


def scope():
    return {"batch_size": 64, "lr": 3e-4, "compile": True, "out_dir": "out", "betas": (0.9, 0.98),
            "layers": [1, 2], "init_from": None, "_private": 1, "np": configurator}


def test_settings_are_public_plain_globals():
    assert sorted(configurator.settings_of(scope())) == sorted(
        ["batch_size", "lr", "compile", "out_dir", "betas", "layers", "init_from"])


def test_config_file_then_args_left_to_right(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("import math\nbatch_size = 8\nlr = 1e-3\n_helper = 5\n")
    s = scope()
    out = configurator.configure(s, [str(cfg), "--batch_size=16", "--lr=2e-3", "--batch_size=32"])
    assert s["batch_size"] == 32 and s["lr"] == 2e-3 and out["batch_size"] == 32
    s = scope()
    configurator.configure(s, ["--batch_size=16", str(cfg)])  # the file comes later, so it wins
    assert s["batch_size"] == 8


def test_unknown_key_lists_close_matches(tmp_path):
    with pytest.raises(CramError, match="unknown setting 'batch_sise'; did you mean batch_size"):
        configurator.configure(scope(), ["--batch_sise=3"])
    with pytest.raises(CramError, match="known settings: .*batch_size"):
        configurator.configure(scope(), ["--zzzzzz=3"])
    cfg = tmp_path / "c.py"
    cfg.write_text("learning_rat = 1.0\n")
    with pytest.raises(CramError, match="c.py: unknown setting 'learning_rat'"):
        configurator.configure(scope(), [str(cfg)])


def test_type_mismatch():
    with pytest.raises(CramError, match="batch_size must be a int"):
        configurator.configure(scope(), ["--batch_size=3.5"])
    with pytest.raises(CramError, match="compile must be a bool"):
        configurator.configure(scope(), ["--compile=1"])
    with pytest.raises(CramError, match="batch_size must be a int"):
        configurator.configure(scope(), ["--batch_size=True"])
    with pytest.raises(CramError, match="lr must be a float"):
        configurator.configure(scope(), ["--lr=fast"])


def test_int_for_float_and_sequences_converted():
    s = scope()
    configurator.configure(s, ["--lr=1", "--betas=[0.8, 0.9]", "--layers=(3, 4)"])
    assert s["lr"] == 1.0 and type(s["lr"]) is float
    assert s["betas"] == (0.8, 0.9) and s["layers"] == [3, 4]


def test_none_default_takes_any_value():
    s = scope()
    configurator.configure(s, ["--init_from=resume"])
    assert s["init_from"] == "resume"
    configurator.configure(s, ["--init_from=3"])  # None is the default recorded, so any literal goes
    s2 = scope()
    configurator.configure(s2, ["--init_from=(1, 2)"])
    assert s2["init_from"] == (1, 2)


def test_booleans():
    s = scope()
    configurator.configure(s, ["--compile=False"])
    assert s["compile"] is False
    configurator.configure(s, ["--compile=True"])
    assert s["compile"] is True


def test_str_settings_keep_text_as_written():
    s = scope()
    configurator.configure(s, ["--out_dir=123"])
    assert s["out_dir"] == "123"
    configurator.configure(s, ["--out_dir=data/a=b, c"])
    assert s["out_dir"] == "data/a=b, c"


def test_missing_config_file_and_bad_arg():
    with pytest.raises(CramError, match="config file nope.py not found"):
        configurator.configure(scope(), ["nope.py"])
    with pytest.raises(CramError, match="expected --key=value"):
        configurator.configure(scope(), ["--compile"])


def test_help_lists_every_setting_with_its_comment_and_changes_nothing(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text('"""Train something."""\nbatch_size = 64  # sequences per step\nlr = 3e-4\n')
    s = scope() | {"__file__": str(script), "__doc__": "Train something."}
    with pytest.raises(SystemExit) as exit_info:
        configurator.configure(s, ["--batch_size=8", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Train something.")
    assert "--batch_size=64  # sequences per step" in out and "--betas=(0.9, 0.98)" in out
    assert s["batch_size"] == 64  # --help stops before any override is applied


def test_a_config_file_that_fails_is_one_line_naming_it(tmp_path):
    cfg = tmp_path / "typo.py"
    cfg.write_text("batch_size = (64\n")
    with pytest.raises(CramError, match=r"config file .*typo.py: SyntaxError: '\(' was never closed"):
        configurator.configure(scope(), [str(cfg)])
    cfg.write_text("batch_size = 64 / undefined_name\n")
    with pytest.raises(CramError, match="config file .*typo.py: NameError: name 'undefined_name' is not defined"):
        configurator.configure(scope(), [str(cfg)])

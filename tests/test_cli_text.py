"""What the command line says: required flags, help defaults taken from the code, hints naming the
flag of the command that was run."""

from __future__ import annotations

import pytest

from synthvlm_data.cli import main, make_parser


def test_build_without_recipe_is_a_usage_error(capsys, monkeypatch, tmp_path):
    """`synthvlm build` alone must not start the 500-image tiny build: argparse's usage error."""
    import synthvlm_data.build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(synthvlm_data.build, "build", lambda *a, **k: pytest.fail("build ran without --recipe"))
    with pytest.raises(SystemExit) as exit_:
        main(["build"])
    assert exit_.value.code == 2
    assert "--recipe" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _help_of(parser, command: str, flag: str) -> str:
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if flag in a.option_strings).help


def test_decontaminate_help_defaults_are_the_code_defaults():
    from synthvlm_data.decontam import DecontamConfig

    parser = make_parser()
    d = DecontamConfig.model_fields
    assert f"(default {d['max_distance'].default})" in _help_of(parser, "decontaminate", "--max-distance")
    assert f"(default {d['ngram'].default}," in _help_of(parser, "decontaminate", "--ngram")
    assert f"(default {d['min_ngram'].default})" in _help_of(parser, "decontaminate", "--min-ngram")


def test_offline_hint_names_the_cli_flag_or_makes_variable(monkeypatch):
    from synthvlm_data.models.refs import offline_hint

    monkeypatch.delenv("SYNTHVLM_TINY_HINT", raising=False)
    assert "`--recipe tiny`" in offline_hint("generate.model") and "RECIPE=" not in offline_hint("generate.model")
    monkeypatch.setenv("SYNTHVLM_TINY_HINT", "RECIPE=tiny")
    assert "use RECIPE=tiny to run offline" in offline_hint("generate.model")


def test_experiment_help_describes_every_option_and_the_arms(capsys):
    from synthvlm_data.experiment import data as D
    from synthvlm_data.experiment.run import parse

    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    assert all(arm in text for arm in D.ARMS)
    assert "(default: 800)" in text and "(default: 0,1)" in text
    assert text.count("(default:") == 13  # every option but --help has a description and its default

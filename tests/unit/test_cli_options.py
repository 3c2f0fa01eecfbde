"""Every setting of the model has a ``tidings serve`` flag, typed and naming its variable."""

from __future__ import annotations

import click
from click.testing import CliRunner

from tidings.cli import main, serve
from tidings.cli_options import env_name
from tidings.config import INTERNAL_FIELDS, Settings


def serve_options() -> dict[str, click.Option]:
    return {p.name: p for p in serve.params if isinstance(p, click.Option) and p.name}


def test_every_setting_has_a_flag_showing_its_environment_variable() -> None:
    options = serve_options()
    for name in Settings.model_fields:
        if name in INTERNAL_FIELDS:
            continue
        assert name in options, f"setting {name} has no flag"
        option = options[name]
        expected_flag = "--app" if name == "apps" else "--" + name.replace("_", "-")
        assert option.opts == [expected_flag]
        assert option.envvar == env_name(name)
        assert option.show_envvar


def test_values_take_a_typed_metavar() -> None:
    options = serve_options()
    for name, info in Settings.model_fields.items():
        if name in INTERNAL_FIELDS or name == "apps" or info.annotation is bool:
            continue
        metavar = options[name].metavar
        assert metavar, f"--{name} shows no type"
        if info.annotation is float:
            assert metavar == "SECONDS", name
        if info.annotation is int:
            assert metavar in {"INTEGER", "BYTES", "PORT"}, name


def test_help_shows_types_defaults_and_variables() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--webhook-timeout SECONDS" in result.output
    assert "--max-write-buffer BYTES" in result.output
    assert "[default: 5]" in result.output
    assert "TIDINGS_WEBHOOK_TIMEOUT" in result.output
    assert "--conformance" not in result.output  # test-only, hidden

"""README cannot drift from the code: every command, option and configuration key is documented,
nothing documented is missing from the code, and every command's --help shows an example."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from lorad.cli import main
from lorad.settings import Settings

README = Path(__file__).parent.parent / "README.md"
GLOBAL_OPTIONS = {"--config", "-c", "--help", "-h"}  # described once, above the table


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def table_rows(text: str) -> list[str]:
    """The first cell of each row of the section's tables (headers and rules left out)."""
    cells = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    return [cell for cell in cells if cell not in ("command", "key") and set(cell) != {"-"}]


def commands() -> dict[str, click.Command]:
    """Every command, with its group's name in front for subcommands (`kohya install`)."""
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command
    walk(main, "")
    return found


def documented_commands() -> dict[str, str]:
    """README's command rows by command name: {"status": "`lorad status [--json] ...`"}."""
    rows = {}
    for cell in table_rows(section("Commands")):
        words = re.match(r"`lorad ([a-z][a-z ]*?)(?= \[| [A-Z-]|`)", cell)
        assert words, f"README's Commands table has a row that names no command: {cell}"
        rows[words.group(1)] = cell
    return rows


def option_names(command: click.Command) -> list[list[str]]:
    return [param.opts + param.secondary_opts for param in command.params
            if isinstance(param, click.Option)
            and not set(param.opts) & GLOBAL_OPTIONS]


def test_every_command_and_option_is_in_readme_and_every_row_is_a_command() -> None:
    rows = documented_commands()
    real = commands()
    assert sorted(rows) == sorted(real), "README's Commands table and `lorad --help` differ"
    for name, command in real.items():
        for names in option_names(command):
            assert any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", rows[name])
                       for n in names), f"README's row for `lorad {name}` lacks {names[0]}"
        for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", rows[name]):
            known = {n for names in option_names(command) for n in names} | GLOBAL_OPTIONS
            assert option in known, f"README's row for `lorad {name}` names {option}, which " \
                                    "the command does not have"


def test_the_group_options_are_documented() -> None:
    text = section("Commands")
    for param in main.params:
        if isinstance(param, click.Option):
            assert any(name in text for name in param.opts), param.opts


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_has_an_example_in_its_help(name: str) -> None:
    runner = CliRunner()
    result = runner.invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    example = re.search(r"Examples?:\n((?:\s+lorad .+\n)+)", result.output)
    assert example, f"`lorad {name} --help` shows no example:\n{result.output}"
    for line in example.group(1).strip().splitlines():
        assert line.strip().startswith(f"lorad {name}") or " ".join(
            line.split()[1:]).startswith(("-c ", "--config ")), line


def config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every configuration key, dotted: `watch.settle_seconds`, `models.NAME.path`."""
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= config_keys(annotation, f"{prefix}{name}.")
        elif origin is dict and _is_model(typing.get_args(annotation)[1]):
            keys |= config_keys(typing.get_args(annotation)[1], f"{prefix}{name}.NAME.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def documented_keys() -> set[str]:
    """The keys README's configuration table names; a row's later names take the first one's
    table: "`prepare.min_side`, `max_side`" is prepare.min_side and prepare.max_side."""
    keys = set()
    for cell in table_rows(section("Configuration keys")):
        names = re.findall(r"`([^`]+)`", cell)
        table = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        keys.add(names[0])
        keys |= {name if "." in name else table + name for name in names[1:]}
    return keys


def test_every_configuration_key_is_in_readme_and_every_documented_key_exists() -> None:
    real, documented = config_keys(Settings), documented_keys()
    assert not real - documented, f"missing from README's configuration table: {real - documented}"
    assert not documented - real, f"in README but not a configuration key: {documented - real}"


def test_the_checks_above_would_see_a_missing_row() -> None:
    """The key walk finds nested tables and the models' own keys."""
    assert {"watch.settle_seconds", "models.NAME.family", "kohya.env", "inbox"} <= config_keys(
        Settings)

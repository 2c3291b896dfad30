"""`--help` on every command, and a broken configuration file: exit status 2 with the setting
and its line named, as `config.load_settings` reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from mailprime.cli.main import app
from tests.cli.conftest import DataDir, cli_env, run_cli, run_many

pytestmark = pytest.mark.slow  # starts servers or runs the real command


def command_paths() -> list[list[str]]:
    """Every command and group of the real app, found by walking it (so new ones are covered)."""

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


# Runs the console script's entry point (`mailprime.cli.main:main`) once per argv inside ONE
# child process: each `--help` then costs milliseconds instead of an interpreter start-up, which
# for ~20 commands would dominate the suite. The groups are also run as separate processes below.
HELP_DRIVER = """
import json, sys
from mailprime.cli.main import main
codes = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["mailprime", *argv]
    print("=== " + " ".join(argv), flush=True)
    try:
        main()
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code if isinstance(exc.code, int) else 1)
sys.stdout.flush()
sys.stderr.write(json.dumps(codes))
"""


def test_help_on_every_command_exits_0(tmp_path: Path) -> None:
    paths = command_paths()
    assert ["queue", "flush"] in paths and ["account", "passwd"] in paths and len(paths) >= 20
    argvs = [[*path, "--help"] for path in paths]
    done = subprocess.run([sys.executable, "-c", HELP_DRIVER, json.dumps(argvs)], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr) == [0] * len(argvs)
    sections = done.stdout.split("=== ")[1:]
    assert len(sections) == len(argvs)
    for argv, section in zip(argvs, sections, strict=True):
        assert section.startswith(" ".join(argv)) and "Usage:" in section, argv

    # The real console entry, one process each, for the root and every group; bare groups
    # print their help too (no_args_is_help), exiting 2 like click's usage errors.
    groups = [path for path in paths if len(path) <= 1]
    *helps, bare_root, bare_group, version = run_many(
        [*([*path, "--help"] for path in groups), [], ["domain"], ["version"]], cwd=tmp_path)
    for path, result in zip(groups, helps, strict=True):
        assert result.code == 0 and "Usage:" in result.out and result.err == "", path
    for bare in (bare_root, bare_group):
        assert "Usage:" in bare.text and bare.code in (0, 2)
    assert version.code == 0 and version.out.strip()


BROKEN = {
    "unknown key": ("[server]\nhostname = \"mx.a.test\"\n\n[delivery]\nmx_prot = 25\n",
                    ["[delivery] mx_prot (line 5)", "unknown setting", "mx_port"]),
    "wrong type": ("[delivery]\nsandbox = false\nmx_port = \"twenty-five\"\n",
                   ["[delivery] mx_port (line 3)", "expected an integer", "twenty-five"]),
    "unknown section": ("[server]\nhostname = \"a\"\n[delivry]\nmx_port = 25\n",
                        ["delivry (line 3)", "unknown section"]),
    "listener type": ("[[listeners]]\nname = \"mx\"\nport = \"high\"\n",
                      ["[listeners] port (line 3)", "expected an integer"]),
    "invalid toml": ("[server\nhostname = \"a\"\n", ["invalid TOML", "line 1"]),
}


@pytest.mark.parametrize("command", [["domain", "list"], ["serve"]])
def test_bad_config_exits_2_naming_key_and_line(tmp_path: Path, command: list[str]) -> None:
    files = []
    for name, (text, _needles) in BROKEN.items():
        path = tmp_path / f"{name.replace(' ', '-')}.toml"
        path.write_text(text)
        files.append(path)
    results = run_many([[*command, "--config", str(p)] for p in files], cwd=tmp_path)
    for (name, (_text, needles)), result in zip(BROKEN.items(), results, strict=True):
        assert result.code == 2, (name, result.err)
        assert result.text.startswith("error: "), (name, result.err)
        for needle in needles:
            assert needle in result.text, (name, needle, result.err)
        assert "Traceback" not in result.err


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("queue", "list", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.code == 2
    assert "not found" in result.text and "mailprime init" in result.text


def test_environment_overrides_reach_the_commands(data_dir: DataDir) -> None:
    """A bad MAILPRIME_* override is reported by its variable name."""
    result = run_cli("domain", "list", "--config", str(data_dir.config), cwd=data_dir.root,
                     env=cli_env(MAILPRIME_DELIVERY_MX_PORT="lots"))
    assert result.code == 2
    assert "MAILPRIME_DELIVERY_MX_PORT: expected an integer" in result.text

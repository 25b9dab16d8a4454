"""The generated config reference is current, and CI runs exactly the README's test command."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start_commands():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_config_reference_is_not_stale():
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gen_config_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start_commands()
    assert len(commands) == 2
    ci_lines = [line.strip() for line in open(os.path.join(REPO, ".ci", "run"), encoding="utf-8")
                if line.strip() and not line.lstrip().startswith("#")
                and not line.startswith(("set ", "cd "))]
    assert ci_lines == [commands[1]]


def test_makefile_targets_of_quick_start_exist():
    makefile = open(os.path.join(REPO, "Makefile"), encoding="utf-8").read()
    for command in _quick_start_commands():
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"

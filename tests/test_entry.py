"""The package and the command's entry point: ``import attnkit`` loads no torch, the command
chooses its thread settings before torch starts, and a missing extra is one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

import attnkit
from attnkit import _threads


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_import_attnkit_loads_no_torch_and_every_name_resolves() -> None:
    code = (
        "import sys, attnkit, attnkit.__main__, attnkit._threads\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "for name in attnkit.__all__: getattr(attnkit, name)\n"
        "from attnkit import MultiHeadAttention, attention\n"
        "print(attention.__module__, MultiHeadAttention.__module__)"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["attnkit.functional", "attnkit.layers.multihead"]
    assert set(attnkit.__all__) == {*attnkit._EXPORTS, *attnkit._SUBMODULES, "__version__"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        attnkit.nope  # noqa: B018


def test_the_command_sets_a_passive_wait_policy_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    _threads.choose(["train", "translate", "--out", "x"], env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", _threads.CHOSEN_BY_ATTNKIT: "OMP_WAIT_POLICY"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    _threads.choose(["demo"], env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {}
    _threads.choose(["bench", "--quick"], env)  # bench measures under the given environment
    assert env == {}
    env = {}
    _threads.choose_for_workers(2, env)
    assert env["OMP_NUM_THREADS"] == str(max(1, (__import__("os").cpu_count() or 1) // 2))
    env = {"OMP_NUM_THREADS": "3"}
    _threads.choose_for_workers(2, env)
    assert env == {"OMP_NUM_THREADS": "3"}


@pytest.mark.parametrize(
    ("blocked", "argv", "package"),
    [(["typer"], ["--help"], "typer"),
     (["matplotlib", "matplotlib.figure"], ["demo", "documents", "--out", "{tmp}"], "matplotlib")],
)
def test_a_missing_extra_is_one_line_naming_what_to_install(
    blocked: list[str], argv: list[str], package: str, tmp_path
) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
        + f"sys.argv = ['attnkit', *{argv!r}]\n"
        "from attnkit.__main__ import main\nmain()"
    )
    proc = _python(code)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"attnkit: error: {package} is not installed; it comes with attnkit's apps extra: "
        "pip install 'attnkit[apps]'"
    ]

"""No deprecation noise from nodeload's dependencies wherever nodeload starts (the command line,
``import nodeload``, the pytest plugin), and nothing else silenced: asyncssh with today's
cryptography really warns (each test's control shows it), nodeload's own warnings still show."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.cli import Cli
from tests.integration.nodes import free_port

pytestmark = pytest.mark.integration

NOISE = "CryptographyDeprecationWarning"


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_the_command_line_prints_no_dependency_warning(cli: Cli) -> None:
    run = cli.run("push", "oci:/nonexistent", "--node", f"root@127.0.0.1:{free_port()}")  # loads asyncssh
    assert run.code != 0
    assert "Warning" not in run.err, run.err
    loud = _python(
        "-W", "default", "-m", "nodeload", "push", "oci:/x", "--node", f"root@127.0.0.1:{free_port()}"
    )
    assert NOISE in loud.stderr  # asked for, warnings are all there


def test_the_library_is_quiet_and_leaves_other_warnings_alone() -> None:
    script = (
        "import warnings, nodeload, asyncssh\n"
        "from cryptography.utils import CryptographyDeprecationWarning\n"
        "warnings.warn('from user code', CryptographyDeprecationWarning)\n"  # not asyncssh's: shown
        "warnings.warn('a deprecation of ours', UserWarning)\n"
    )
    run = _python("-c", script)
    assert "DSA is deprecated" not in run.stderr, run.stderr
    assert "from user code" in run.stderr
    assert "a deprecation of ours" in run.stderr
    control = _python("-c", "import asyncssh")  # without nodeload first
    assert "DSA is deprecated" in control.stderr


def test_the_pytest_plugin_keeps_them_out_of_the_warnings_summary(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import asyncssh  # imported while pytest loads conftest files\n")
    pytester.makepyfile(
        """
        import warnings

        def test_imports_asyncssh_again():
            import importlib, asyncssh.crypto.dsa
            importlib.reload(asyncssh.crypto.dsa)  # warns again, inside a test

        def test_other_warnings_still_show():
            warnings.warn("a warning of the user's own", UserWarning)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert NOISE not in text
    assert "a warning of the user's own" in text
    control = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:nodeload")
    assert NOISE in control.stdout.str()

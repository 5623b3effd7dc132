"""The noise filters drop exactly the lines they name; everything else still reaches the terminal, even
when the process dies inside the filtered block (issue 22 item 8: the filter used to hold fd 2 in a
temporary file written back only on a clean exit, so an ERROR line followed by a crash vanished)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
    import os
    from mosear.noise import LITERT_DELEGATE_INFO, drop_c_stderr
"""


def _run(body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_c_stderr_filter_drops_only_the_named_line():
    """Catches: a filter that drops more than its pattern, or reorders the block's output and what follows."""
    p = _run("""
        with drop_c_stderr(LITERT_DELEGATE_INFO):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"ERROR: real trouble\\n")
            os.write(2, b"no newline at the end")
        os.write(2, b"\\nafter\\n")
    """)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == ["ERROR: real trouble", "no newline at the end", "after"]


@pytest.mark.parametrize("death", ["os._exit(3)", "import ctypes; ctypes.string_at(0)", "os.abort()"])
def test_c_stderr_filter_loses_nothing_when_the_process_dies_in_the_block(death):
    """An ERROR line written inside the block, then the process dies there (``os._exit``, a segfault, an
    abort): the line still reaches stderr. Catches: capture into a buffer written back only in ``finally``
    (the line is lost), or a draining thread that dies with the process before reading it."""
    p = _run(f"""
        with drop_c_stderr(LITERT_DELEGATE_INFO):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"ERROR: the last words\\n")
            {death}
    """)
    assert p.returncode != 0
    assert "ERROR: the last words" in p.stderr.splitlines(), p.stderr
    assert "XNNPACK delegate" not in p.stderr

"""The noise filters drop exactly the lines they name; everything else still reaches the terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_c_stderr_filter_drops_only_the_named_line():
    code = textwrap.dedent("""
        import os
        from mosear.noise import LITERT_DELEGATE_INFO, drop_c_stderr
        with drop_c_stderr(LITERT_DELEGATE_INFO):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"ERROR: real trouble\\n")
        os.write(2, b"after\\n")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stderr.splitlines() == ["ERROR: real trouble", "after"]

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


def test_decoder_warnings_are_kept_at_any_thread_count(samples_dir, tmp_path):
    """A clip with damaged packets gives the same decoder warnings with 1, 2 and 4 libav threads. Catches:
    capturing libav's log on the calling thread only (its decoder threads' messages were lost: 57 warnings
    at 1 thread, 17 at 2)."""
    import numpy as np

    from mosear.media.decode import decode_clip

    data = bytearray((samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4").read_bytes())
    rng = np.random.default_rng(0)
    for off in range(len(data) // 3, len(data) // 3 + 40000, 4000):  # damage packets, keep the index
        data[off:off + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    clip = tmp_path / "damaged.mp4"
    clip.write_bytes(bytes(data))
    counts = {t: decode_clip(clip, num_frames=8, height=32, width=32, threads=t).num_warnings for t in (1, 2, 4)}
    assert counts[1] > 0 and counts[2] == counts[1] and counts[4] == counts[1], counts

"""openSMILE's eGeMAPS v02 functionals through its C API (``libSMILEapi``), without its Python layer.

The ``opensmile`` wheel ships the C library and the config files; its Python package wraps them in
``audinterface`` / ``audobject`` objects and imports pandas. For one functionals vector per clip none
of that is needed: :class:`EGeMAPSFunctionals` loads the same library with ``ctypes``, initialises it
with the same config file and options the wheel's ``Smile(eGeMAPSv02, Functionals)`` passes, feeds the
same int16 samples and reads the one output frame, so the 88 numbers are bit-identical to
``Smile(...)(audio, sr)`` (``tests/mine/test_smile.py`` checks that on real clips). What it saves, per
mining actor (measured, ``docs/shard.md`` "Mining"): the imports and the ``Smile()`` construction,
~0.56 s of CPU at start-up, which every worker pays before its first clip.

Per clip, as in the wheel: a fresh SMILE object (config parse + component set-up, ~6.5 ms of the
~48 ms per 3 s clip). One object cannot be reused: after ``smile_reset`` (SMILEapi of opensmile 2.6.0)
a second run writes no output frame, so the per-clip set-up stays.
"""

from __future__ import annotations

import ctypes
import importlib.util
import platform
from ctypes import CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int, c_long, c_void_p
from pathlib import Path

import numpy as np

__all__ = ["EGeMAPSFunctionals", "opensmile_root"]

_SOURCE, _SINK = b"extsource", b"extsink"  # the component names the wheel's shared configs define
_LIBRARY = {"Linux": "libSMILEapi.so", "Darwin": "libSMILEapi.dylib", "Windows": "SMILEapi.dll"}


class _FrameMeta(Structure):  # SMILEapi's FrameMetaData
    _fields_ = [("vIdx", c_long), ("time", c_double), ("period", c_double), ("lengthSec", c_double)]


_SinkCallback = CFUNCTYPE(c_int, POINTER(c_float), c_long, c_long, POINTER(_FrameMeta), c_void_p)


def opensmile_root() -> Path:
    """The installed ``opensmile`` package's ``core`` folder (found, not imported)."""
    spec = importlib.util.find_spec("opensmile")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("package 'opensmile' is not installed (pip install opensmile)", name="opensmile")
    return Path(list(spec.submodule_search_locations)[0]) / "core"


def _load_library(core: Path) -> ctypes.CDLL:
    name = _LIBRARY.get(platform.system())
    found = sorted((core / "bin").glob(f"*/{name}")) if name else []
    machine = platform.machine().lower()
    found = [p for p in found if p.parent.name.endswith(machine)] or found
    if not found:
        raise FileNotFoundError(f"opensmile is installed but {core / 'bin'} holds no {name or 'SMILEapi'} "
                                f"for {platform.system()} {machine}")
    lib = ctypes.CDLL(str(found[0]))
    lib.smile_new.argtypes, lib.smile_new.restype = [], c_void_p
    lib.smile_initialize.argtypes = [c_void_p, c_char_p, c_int, POINTER(c_char_p), c_int, c_int, c_int, c_char_p]
    lib.smile_initialize.restype = c_int
    lib.smile_run.argtypes, lib.smile_run.restype = [c_void_p], c_int
    lib.smile_free.argtypes, lib.smile_free.restype = [c_void_p], None
    lib.smile_error_msg.argtypes, lib.smile_error_msg.restype = [c_void_p], c_char_p
    lib.smile_extaudiosource_write_data.argtypes = [c_void_p, c_char_p, c_void_p, c_int]
    lib.smile_extaudiosource_write_data.restype = c_int
    lib.smile_extaudiosource_set_external_eoi.argtypes = [c_void_p, c_char_p]
    lib.smile_extaudiosource_set_external_eoi.restype = c_int
    lib.smile_extsink_set_data_callback_ex.argtypes = [c_void_p, c_char_p, _SinkCallback, c_void_p]
    lib.smile_extsink_set_data_callback_ex.restype = c_int
    lib.smile_extsink_get_num_elements.argtypes = [c_void_p, c_char_p, POINTER(c_long)]
    lib.smile_extsink_get_num_elements.restype = c_int
    lib.smile_extsink_get_element_name.argtypes = [c_void_p, c_char_p, c_long, POINTER(c_char_p)]
    lib.smile_extsink_get_element_name.restype = c_int
    return lib


class EGeMAPSFunctionals:
    """``extractor(audio, sample_rate)`` -> float32[88]: eGeMAPS v02 functionals of one mono clip.

    ``audio``: float waveform in [-1, 1] (values are scaled by 32768 and cast to int16, as the wheel
    does). ``names``: the 88 feature names in output order. NaN-filled when openSMILE writes no frame
    (a clip too short for its windows). Not thread-safe per call; one instance per worker.
    """

    def __init__(self) -> None:
        core = opensmile_root()
        cfg = core / "config"
        self._lib = _load_library(core)
        self._config = str(cfg / "egemaps" / "v02" / "eGeMAPSv02.conf").encode()
        # the options opensmile.Smile(eGeMAPSv02, Functionals) passes, in its order
        self._options = {
            "sink": cfg / "shared" / "standard_external_data_output_single.conf.inc",
            "sinkLevel": "func",
            "bufferModeRbConf": cfg / "shared" / "BufferModeRb.conf.inc",
            "frameModeFunctionalsConf": cfg / "shared" / "FrameModeFunctionals.conf.inc",
            "source": cfg / "shared" / "standard_external_wave_input.conf.inc",
        }
        obj = self._new(16000)
        try:
            n = c_long()
            self._check(obj, self._lib.smile_extsink_get_num_elements(obj, _SINK, ctypes.byref(n)))
            names = []
            for i in range(n.value):
                name = c_char_p()
                self._check(obj, self._lib.smile_extsink_get_element_name(obj, _SINK, i, ctypes.byref(name)))
                names.append(name.value.decode())
        finally:
            self._lib.smile_free(obj)
        self.names: list[str] = names

    def _check(self, obj: int, code: int) -> None:
        if code != 0:
            msg = self._lib.smile_error_msg(obj)
            raise RuntimeError(f"openSMILE error {code}: {msg.decode(errors='replace') if msg else 'no message'}")

    def _new(self, sample_rate: int) -> int:
        opts = {**self._options, "sampleRate": int(sample_rate), "nBits": 16}
        flat = [str(v).encode() for kv in opts.items() for v in kv]
        arr = (c_char_p * (len(flat) + 1))(*flat, None)
        obj = self._lib.smile_new()
        if not obj:
            raise RuntimeError("openSMILE: could not create a SMILEapi object")
        code = self._lib.smile_initialize(obj, self._config, len(opts), arr, 2, 0, 0, None)
        if code != 0:
            try:
                self._check(obj, code)
            finally:
                self._lib.smile_free(obj)
        return obj

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        pcm = np.asarray(audio, dtype=np.float32).reshape(-1).copy()
        pcm *= 32768
        data = pcm.astype(np.int16).tobytes()
        frames: list[np.ndarray] = []

        def sink(values, nt, n, _meta, _param):  # one call per output frame
            frames.append(np.ctypeslib.as_array(values, shape=(nt, n)).copy())
            return 1

        cb = _SinkCallback(sink)  # referenced until the run ends
        obj = self._new(sample_rate)
        try:
            self._check(obj, self._lib.smile_extsink_set_data_callback_ex(obj, _SINK, cb, None))
            buf = ctypes.create_string_buffer(data, len(data))
            self._check(obj, self._lib.smile_extaudiosource_write_data(obj, _SOURCE, buf, len(data)))
            self._check(obj, self._lib.smile_extaudiosource_set_external_eoi(obj, _SOURCE))
            self._check(obj, self._lib.smile_run(obj))
        finally:
            self._lib.smile_free(obj)
        if not frames:
            return np.full(len(self.names), np.nan, np.float32)
        return np.vstack(frames).astype(np.float32).reshape(-1)

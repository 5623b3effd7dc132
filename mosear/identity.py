"""One content identity for every stage input, and the commit marker that records it.

Every skip, resume and cache decision in mosear compares *content digests* of the exact inputs a
result was made from, never paths, sizes or modification times:

- :func:`file_digest` is the SHA-256 of a file's bytes, streamed in 1 MiB blocks. Re-reading a large
  corpus on every run would cost as much as decoding it, so a :class:`DigestMemo` (a JSON sidecar)
  remembers each digest next to the file's ``(size, mtime_ns, ctime_ns, inode, device)``; a file whose
  stat is unchanged is not read again (``ctime`` changes on every write and no user tool can set it back,
  so an in-place rewrite that restores the mtime, as ``cp -p`` or ``rsync -t`` do, is still read). The memo only saves reading: every decision compares the digest itself. Delete
  the sidecar to force a full re-read.
- :func:`digest_paths` digests files and folders (a folder is the sorted list of ``(relative path,
  file digest)``), skipping temporaries and bookkeeping records (``run.json``, ``commit.json``,
  ``units.json``, ``*.stats.json``: timestamps and counts, not data; the data files they vouch for
  are digested themselves).
- :func:`shard_folder_digest` is the identity of a shard folder from the ``tar_sha256`` its shards'
  commit markers carry (computed while each tar was written), so a consumer need not re-read tars.
- A config's share of the identity is :meth:`mosear.config.StageConfig.output_hash`: only fields that
  change the output, as declared on the fields (:data:`mosear.config.SCHEDULING`, ...).
- :func:`code_fingerprint` is the identity of the code a stage runs: the bytes of every ``mosear`` module
  reachable from the stage's ``run`` module through its imports (top-level or inside functions, relative
  or absolute, and ``"mosear.x:Name"`` strings a registry imports later), their parent packages and the
  data files beside them (``synonyms.tsv``), computed once per process. A fixed bug changes it, so what
  the buggy code cached is recomputed; an edit to a module the stage never imports does not. Third-party
  code (a ``module:Class`` mining stage, ``py_modules``) is identified by its declared version only.
- A ``://`` input (object storage) is recorded with the version its store reports
  (:func:`remote_version`: ETag, version id, generation or MD5, through ``fsspec``); when one cannot be
  had, the identity gets a one-time ``uncacheable`` nonce, so the result is never reused, and the stage
  says so in the log.
- :func:`stage_identity` puts these together for one stage; the Prefect cache key
  (:meth:`mosear.orchestrate.dispatch.PreparedStage.fingerprint`) and each stage's commit marker (:func:`write_marker`,
  ``{output}/commit.json``, written last) hold the same dict, and :func:`changed` names what differs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mosear.atomic import atomic_write_json

__all__ = [
    "DigestMemo", "default_memo", "file_digest", "safe_digest", "digest_paths", "iter_files", "digest_json", "shard_folder_digest",
    "code_fingerprint", "model_paths", "remote_inputs", "remote_version", "stage_identity", "identity_digest", "changed", "MARKER", "write_marker", "read_marker", "marker_matches",
]

_BLOCK = 1 << 20  # 1 MiB: large enough for throughput, small enough to stream anything
MARKER = "commit.json"
# Records about a result (timestamps, counts), not the result: never part of a consumer's input identity.
_BOOKKEEPING = {"run.json", MARKER, "units.json", "input-digests.json"}


def _skipped(name: str) -> bool:
    return (name.startswith((".", "_tmp")) or name.endswith((".tmp", ".partial", ".lock", ".stats.json", ".broken"))
            or name in _BOOKKEEPING)


def iter_files(root: Path) -> Iterator[Path]:
    """Files under ``root`` (or ``root`` itself), sorted by relative path; temporaries and records skipped."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        for name in sorted(filenames):
            if not _skipped(name):
                yield Path(dirpath) / name


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


class DigestMemo:
    """A JSON sidecar ``abs path -> [size, mtime_ns, ctime_ns, inode, device, sha256]``; saved atomically by :meth:`save`.

    ``path=None`` keeps the memo in memory only (every file is read once per memo object).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, list] = {}
        if self.path and self.path.is_file():
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged memo only costs a re-read
                self._data = {}
        self._dirty = False

    def digest(self, path: str | Path) -> str:
        p = Path(path)
        st = p.stat()
        key = str(p.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        hit = self._data.get(key)
        if hit and len(hit) == len(stamp) + 1 and hit[:-1] == stamp:
            return hit[-1]
        digest = _sha256_file(p)
        with self._lock:
            self._data[key] = [*stamp, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        if self.path and self._dirty:
            with self._lock:
                atomic_write_json(self.path, self._data, indent=None)
                self._dirty = False


def file_digest(path: str | Path, memo: DigestMemo | None = None) -> str:
    """SHA-256 hex digest of the file's bytes (through ``memo`` when given)."""
    return memo.digest(path) if memo is not None else _sha256_file(Path(path))


def safe_digest(path: str | Path, memo: DigestMemo | None = None) -> str:
    """:func:`file_digest`, or ``missing`` / ``unreadable:<error>`` for a file that cannot be read (a
    dangling link, no permission): the stage reports such a file as bad input, the identity still
    changes when it is fixed."""
    try:
        return file_digest(path, memo)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def digest_paths(paths: Iterable[str | Path], memo: DigestMemo | None = None) -> str:
    """One hex digest for the contents of ``paths`` (files or folders), in the order given.

    A path that does not exist digests as ``missing`` (the stage itself reports it as bad input).
    """
    memo = memo if memo is not None else DigestMemo()
    outer = hashlib.sha256()
    for p in paths:
        root = Path(p)
        outer.update(f"path\0{root.name}\0".encode())
        if not root.exists():
            outer.update(b"missing\0")
            continue
        for f in iter_files(root):
            rel = f.name if f == root else f.relative_to(root).as_posix()
            outer.update(f"{rel}\0{safe_digest(f, memo)}\0".encode())
    memo.save()
    return outer.hexdigest()


def digest_json(obj: Any) -> str:
    """SHA-256 of ``obj``'s canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def shard_folder_digest(folder: str | Path) -> str:
    """Digest of a shard folder's committed shards: ``(name, tar_sha256)`` from each commit marker.

    A shard whose tar is missing or has another size than its marker says is left out (it is not
    committed); a rebuilt shard with other bytes changes the digest.
    """
    h = hashlib.sha256()
    folder = Path(folder)
    for stats in sorted(folder.glob("*.stats.json")):
        try:
            st = json.loads(stats.read_text())
        except (OSError, ValueError):
            continue
        tar = stats.with_name(stats.name[: -len(".stats.json")] + ".tar")
        if not tar.is_file() or tar.stat().st_size != st.get("tar_bytes"):
            continue
        h.update(f"{tar.name}\0{st.get('tar_sha256')}\0".encode())
    return h.hexdigest()


# -- model folders named by a config ------------------------------------------------------------------
MODEL_PATH_KEYS = frozenset({"model_path", "llm_path", "vision_path", "audio_path", "model_file", "base_model"})


def model_paths(value: Any) -> list[Path]:
    """Local model files and folders a config names (at any depth of dicts, lists and pydantic models):
    values of the keys in :data:`MODEL_PATH_KEYS` that exist on this machine, sorted, unique. A stage adds
    them to its inputs, so weights are identified by their bytes (through the :class:`DigestMemo`: a
    7B folder is read once, then only re-read when a file's stat changes), never by their path. A hub id
    that is no local path (resolved from the offline cache) is identified by its name."""
    found: set[Path] = set()

    def walk(v: Any) -> None:
        if hasattr(v, "model_dump"):
            v = v.model_dump()
        if isinstance(v, dict):
            for k, x in v.items():
                if k in MODEL_PATH_KEYS and isinstance(x, str) and "://" not in x and Path(x).exists():
                    found.add(Path(x).resolve())
                else:
                    walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(value)
    return sorted(found)


# -- the code a stage runs ----------------------------------------------------------------------------
_MODULE_STRING = re.compile(r"^(mosear(?:\.[A-Za-z_]\w*)*)(?::[A-Za-z_][\w.]*)?$")


def _package_root() -> Path:
    import mosear

    return Path(mosear.__file__).resolve().parent


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of module ``name`` (``mosear.a.b``) under the package ``root``, or None."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@functools.lru_cache(maxsize=None)
def _imports(path: Path, name: str) -> frozenset[str]:
    """Every ``mosear`` module name ``path`` (module ``name``) may import, anywhere in its source."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # ``from pkg import submodule``
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _MODULE_STRING.match(node.value)
            if m:
                found.add(m.group(1))
    return frozenset(f for f in found if f == "mosear" or f.startswith("mosear."))


@functools.lru_cache(maxsize=None)
def code_fingerprint(module: str, root: Path | None = None) -> dict[str, Any]:
    """``{digest, modules}``: the SHA-256 over the bytes of every ``mosear`` source file ``module`` reaches
    through its imports (transitively, with parent packages and the non-Python files beside each one),
    and how many modules that is. ``root``: the ``mosear`` package folder (default: the imported one).
    Cached per process (the source does not change under a running job)."""
    root = Path(root) if root is not None else _package_root()
    if _module_file(module, root) is None:
        raise ValueError(f"code_fingerprint({module!r}): no such module in {root}")
    todo, seen = [module], {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, root)
        seen[name] = path
        if path is None:  # a name imported from a module, not a module
            continue
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        todo += sorted(_imports(path, name))
    files = {p for p in seen.values() if p is not None}
    for folder in {p.parent for p in files}:
        files.update(f for f in folder.iterdir() if f.is_file() and f.suffix not in (".py", ".pyc"))
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f.relative_to(root).as_posix()}\0{_sha256_file(f)}\0".encode())
    return {"digest": h.hexdigest(), "modules": sum(p is not None for p in seen.values())}


# -- remote (://) inputs -------------------------------------------------------------------------------
_VERSION_KEYS = ("ETag", "etag", "VersionId", "version_id", "generation", "md5Hash", "md5", "content_md5")


def remote_inputs(cfg: Any) -> list[str]:
    """The ``://`` URIs held by the config's input fields (``json_schema_extra`` role ``input``), at any
    depth of lists and nested sections."""
    found: list[str] = []

    def walk(model: Any) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name, None)
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if hasattr(type(v), "model_fields"):
                    walk(v)
                elif extra.get("role") == "input" and isinstance(v, str) and "://" in v:
                    found.append(v)

    if hasattr(type(cfg), "model_fields"):
        walk(cfg)
    return sorted(set(found))


def remote_version(uri: str) -> str | None:
    """``"<key>:<value>"`` of the first version field (ETag, version id, generation, MD5) the object store
    reports for ``uri`` (a folder: over its files), or None when none can be had (no ``fsspec`` driver
    for the scheme, no such field, the store unreachable)."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        infos = [fs.info(path)]
        if infos[0].get("type") == "directory":
            infos = [fs.info(p) for p in sorted(fs.find(path))]
    except Exception:  # noqa: BLE001 - any failure means: no version, the stage will not cache
        return None
    parts = []
    for info in infos:
        key = next((k for k in _VERSION_KEYS if info.get(k)), None)
        if key is None:
            return None
        parts.append(f"{info.get('name')}={key}:{info[key]}")
    return digest_json(parts) if len(parts) > 1 else parts[0]


# -- a stage's identity and its commit marker ---------------------------------------------------------
def default_memo(output: str | Path) -> DigestMemo:
    """The digest memo of a stage's output folder (``{output}/.input-digests.json``), shared by the
    stage and the orchestrator that computes its cache key, so each input file is read once."""
    return DigestMemo(Path(output) / ".input-digests.json")


def stage_identity(spec: Any, cfg: Any, memo: DigestMemo | None = None) -> dict[str, Any]:
    """``{stage, version, code, config, inputs}``: the package version, the :func:`code_fingerprint` of
    the stage's ``run`` module, the config's output hash and one digest per input path (a ``://`` input:
    its store's version, or an ``uncacheable`` nonce when there is none: see the module docstring).

    ``spec`` is the stage's :class:`~mosear.orchestrate.spec.StageSpec` (each stage package's
    ``spec.SPEC``); the input paths are those its ``inputs(cfg)`` names.
    """
    import mosear

    if isinstance(spec, str):  # the name alone would need the registry, which imports every stage
        raise TypeError(f"stage_identity({spec!r}, ...): pass the stage's spec (mosear.<package>.spec.SPEC), not its name")
    memo = memo if memo is not None else default_memo(spec.output(cfg))
    inputs = {os.path.abspath(p): digest_paths([p], memo) for p in spec.inputs(cfg)}
    code = code_fingerprint(spec.run.partition(":")[0])["digest"]
    identity = {"stage": spec.name, "version": mosear.__version__, "code": code, "config": cfg.output_hash(),
                "inputs": inputs, "config_fields": _fields(cfg)}
    unversioned = []
    for uri in remote_inputs(cfg):
        version = remote_version(uri)
        if version is None:
            unversioned.append(uri)
        else:
            inputs[uri] = version
    if unversioned:  # content unknown: never reuse a result made from it
        import logging
        import uuid

        logging.getLogger(__name__).warning(
            "%s: %s reports no ETag or version id: its result is not cached (every run recomputes it; copy the "
            "input to a local path or a versioned store to make it reusable)", spec.name, ", ".join(unversioned))
        identity["uncacheable"] = {"inputs": unversioned, "nonce": uuid.uuid4().hex}
    return identity


def _fields(cfg: Any) -> dict[str, Any]:
    from mosear.config import output_fields

    return output_fields(cfg)


def identity_digest(identity: dict[str, Any]) -> str:
    """The digest of an identity (what cache keys and markers compare); ``config_fields`` is its detail."""
    return digest_json({k: v for k, v in identity.items() if k != "config_fields"})


def changed(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two identities, in words a user can act on (empty: the same)."""
    if not old:
        return ["no earlier identity recorded"]
    out = []
    if old.get("version") != new.get("version"):
        out.append(f"mosear version {old.get('version')} -> {new.get('version')}")
    if old.get("code") != new.get("code"):
        out.append("the stage's code (mosear source files it runs)")
    of, nf = old.get("config_fields") or {}, new.get("config_fields") or {}
    diff = sorted(k for k in set(of) | set(nf) if of.get(k) != nf.get(k))
    if diff:
        out.append("config fields " + ", ".join(diff))
    elif old.get("config") != new.get("config"):
        out.append("config")
    oi, ni = old.get("inputs") or {}, new.get("inputs") or {}
    for path in sorted(set(oi) | set(ni)):
        if oi.get(path) != ni.get(path):
            out.append(f"content of {path}" if path in oi and path in ni else f"input {path} {'added' if path in ni else 'removed'}")
    return out


def write_marker(output: str | Path, identity: dict[str, Any], status: str = "complete", **extra: Any) -> Path:
    """Write ``{output}/commit.json`` atomically: the stage's identity, status and ``extra`` facts.

    Call it last, after every file it vouches for is in place. ``status``: ``complete`` or ``partial``
    (the stage ran with ``allow_partial`` and ``missing`` says what is not there).
    """
    payload = {"status": status, "identity": identity, "digest": identity_digest(identity),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    return atomic_write_json(Path(output) / MARKER, payload, sort_keys=True)


def read_marker(output: str | Path) -> dict[str, Any] | None:
    """The stage's commit marker, or None when there is none (or it cannot be read)."""
    p = Path(output) / MARKER
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def marker_matches(output: str | Path, identity: dict[str, Any]) -> bool:
    """True when ``output`` holds a complete result of exactly ``identity``."""
    m = read_marker(output)
    return bool(m) and m.get("status") == "complete" and m.get("digest") == identity_digest(identity)

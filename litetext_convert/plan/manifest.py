"""What the plan is checked against: the target model's parameters and persistent buffers (names,
shapes, dtypes), built on the meta device, or read back from an earlier build of the same model.

Building it means importing transformers' modeling code and constructing the model on the meta
device: ~2.3 s of Python on 2 cores, more than copying a 2.2 GB checkpoint. The result is a pure
function of that code, torch and the config, so it is kept in a cache keyed by exactly those:
  - the config, as a full dict (every value, defaults included) and the model class name;
  - the torch version;
  - the transformers version and, for every .py file of the installed transformers package, its
    path, size and mtime (found without importing it: an upgrade, a reinstall or an edited file in
    an editable checkout all give another key).
A cached entry is the same check, not a weaker one: the names, shapes and dtypes that building the
model gave last time, under a key that changes whenever the build could give anything else.

The cache is a cache, never an authority (docs/design/safety-untrusted.md):
  - an entry is read only when lstat says it is a regular file (no symlink, FIFO or device: those
    could hang the read or feed it forever), at most MAX_ENTRY_BYTES, owned by this user and not
    writable by others; it is opened with O_NOFOLLOW|O_NONBLOCK and read with a bound;
  - it carries its key, the sha256 of its payload and an HMAC-SHA256 of both under this user's
    secret (KEY_FILE, made once, 0600): a damaged entry, one copied under another key, or one
    written by anyone without the secret (a careful forger who also recomputes the sha256, an
    entry copied from another account or machine) is ignored;
  - the secret is read only from a regular file of exactly KEY_BYTES bytes that this user owns and
    no one else may read or write; any other key file switches the cache off for the run with
    one `note:` (it is never replaced: litetext did not write it);
  - anything ignored says so in one `note:` and is rebuilt (the new entry replaces it by rename,
    which replaces a link or a FIFO itself, never what it points at);
  - a plan that fails against a cached manifest is checked again against a freshly built one
    (`checked_against_model`): the real model decides every refusal.
A cache that cannot be written is skipped.

Where: $LITETEXT_CACHE_DIR, else $XDG_CACHE_HOME/litetext, else ~/.cache/litetext (the `manifests/`
folder). LITETEXT_NO_CACHE=1 builds every time and writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.errors import LitetextError, note

CACHE_FORMAT = 3  # bump when the file layout or the key's contents change (3: entries carry an HMAC)
BUILT, CACHED = "built", "cached"  # how a manifest was obtained (the conversion record keeps it)
# A full-size video model's manifest is ~0.2 MB; anything far larger is not an entry we wrote.
MAX_ENTRY_BYTES = 16 * 1024 * 1024
KEY_FILE = "manifest-hmac.key"  # in the cache folder: this user's secret that signs every entry
KEY_BYTES = 32


@dataclass(frozen=True)
class Manifest:
    tensors: dict[str, torch.Tensor]  # name -> meta tensor with the model's shape and dtype
    origin: str  # BUILT or CACHED


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is switched off."""
    if os.environ.get("LITETEXT_NO_CACHE", "").strip() not in ("", "0"):
        return None
    override = os.environ.get("LITETEXT_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "litetext"


def package_fingerprint(package: str) -> str:
    """sha256 over (relative path, size, mtime_ns) of the package's .py files, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return "absent"
    root = Path(spec.origin).parent
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def manifest_key(config) -> str:
    """Everything the meta model's names, shapes and dtypes depend on, hashed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:  # pragma: no cover - transformers is a dependency
        transformers_version = "unknown"
    material = {
        "format": CACHE_FORMAT,
        "model_class": config.architectures[0],
        "config_class": type(config).__name__,
        "config": config.to_dict(),
        "torch": torch.__version__,
        "transformers": transformers_version,
        "transformers_files": package_fingerprint("transformers"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def target_manifest(config, build, *, use_cache: bool = True) -> Manifest:
    """`build(config)` -> {name: meta tensor}, or the cached result of an earlier identical build.
    `use_cache=False` builds and replaces the entry (a cached manifest that the plan disagreed with)."""
    folder = cache_dir()
    secret = signing_key(folder) if folder else None
    if secret is None:  # switched off, unwritable, or its key file is not one to trust
        return Manifest(build(config), BUILT)
    key = manifest_key(config)
    path = folder / "manifests" / f"{key}.json"
    if use_cache:
        cached = read_entry(path, key, secret)
        if cached is not None:
            return Manifest(cached, CACHED)
    tensors = build(config)
    _write(path, key, secret, config.architectures[0], tensors)
    return Manifest(tensors, BUILT)


# ---------------------------------------------------------------- the secret that signs entries


def signing_key(folder: Path) -> bytes | None:
    """This user's secret from `folder`/KEY_FILE, made there on first use. None when the folder
    cannot be written (the cache is skipped, as before) or, with a note, when the file there is not
    one litetext would have made: a link, not a regular file, another owner, readable by others."""
    path = folder / KEY_FILE
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        return _key_refused(path, f"cannot be read ({exc.strerror})")
    if info is None:
        created = _create_key(path)
        if created is not None:
            return created
        try:  # another litetext made it meanwhile (or nothing could be written: silent, as before)
            info = os.lstat(path)
        except OSError:
            return None
    refusal = _key_refusal(info)
    if refusal:
        return _key_refused(path, refusal)
    try:
        return _read_key(path, info)
    except OSError as exc:
        return _key_refused(path, f"cannot be read ({exc.strerror})")
    except _Damaged as exc:
        return _key_refused(path, str(exc))


def _create_key(path: Path) -> bytes | None:
    """A fresh secret, written whole under a private temporary name and linked into place (link
    never replaces anything at `path`, a link included); None when it cannot be, or already is."""
    secret = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".partial-{os.getpid()}-{secrets.token_hex(4)}.key")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as output:
            output.write(secret)
            output.flush()
            os.fsync(output.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return None  # another process's key won the race: read that one
    except OSError:
        return _create_key_in_place(path, secret)  # a filesystem without hard links
    finally:
        temporary.unlink(missing_ok=True)
    return secret


def _create_key_in_place(path: Path, secret: bytes) -> bytes | None:
    """The secret written at `path` itself, which must not exist (O_EXCL; no link followed)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return None
    with os.fdopen(fd, "wb") as output:
        output.write(secret)
    return secret


def _key_refusal(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
        return f"is {kind}"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return "belongs to another user"
    if hasattr(os, "geteuid") and info.st_mode & 0o077:  # POSIX modes; elsewhere they do not say this
        return "can be read or written by other users (it must be mode 0600)"
    if info.st_size != KEY_BYTES:
        return f"is {info.st_size} bytes, not {KEY_BYTES}"
    return None


def _read_key(path: Path, info: os.stat_result) -> bytes:
    """The secret, from the very file lstat approved (no link followed, no FIFO waited on)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
            raise _Damaged("was replaced while read")
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise _Damaged(f"holds {len(data)} bytes, not {KEY_BYTES}")
    return data


@functools.lru_cache(maxsize=None)  # once per key file and reason in a process (convert-all asks per checkpoint)
def _key_refused(path: Path, why: str) -> None:
    note(f"not using the model manifest cache: its key file {path} {why}; "
         "remove that file (litetext makes a new one) or set LITETEXT_NO_CACHE=1")
    return None


def entry_mac(secret: bytes, key: str, payload: str) -> str:
    """HMAC-SHA256 of what an entry vouches for: the cache format, its key and its payload."""
    return hmac.new(secret, f"litetext manifest {CACHE_FORMAT}\0{key}\0{payload}".encode(), hashlib.sha256).hexdigest()


def checked_against_model(origin: str | None, tensors: dict, check: Callable[[dict], object], rebuild: Callable[[], dict]):
    """`check(tensors)`; when a *cached* manifest makes it fail, the entry is not trusted over the
    real model: `rebuild()` builds it again and that check's result (or error) stands."""
    try:
        return check(tensors)
    except LitetextError:
        if origin != CACHED:
            raise
    fresh = rebuild()
    result = check(fresh)  # raises, when the real model refuses the plan too
    note("the cached model manifest disagreed with the model transformers builds; rebuilt it")
    return result


def read_entry(path: Path, key: str, secret: bytes) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None: absent (silently), or ignored with a note saying why."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _ignored(path, f"cannot be read ({exc.strerror})")
    refusal = _refusal(info)
    if refusal:
        return _ignored(path, refusal)
    try:
        payload = _payload(_read_bounded(path), key, secret)
        return _tensors(json.loads(payload)["tensors"])
    except OSError as exc:
        return _ignored(path, f"cannot be read ({exc.strerror})")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, RuntimeError, OverflowError) as exc:
        return _ignored(path, str(exc) if isinstance(exc, _Damaged) else "is not a manifest litetext wrote")


class _Damaged(ValueError):
    """The entry's envelope does not vouch for its payload."""


def _refusal(info: os.stat_result) -> str | None:
    """Why an lstat result is not an entry to read, or None."""
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
        return f"is {kind}"
    if info.st_size > MAX_ENTRY_BYTES:
        return f"is {info.st_size} bytes, more than an entry can be ({MAX_ENTRY_BYTES})"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return "belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


def _read_bounded(path: Path) -> bytes:
    """At most MAX_ENTRY_BYTES + 1 bytes; no symlink followed, no wait on a FIFO swapped in after lstat."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Damaged("is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_ENTRY_BYTES:
        raise _Damaged(f"grew past {MAX_ENTRY_BYTES} bytes while read")
    return data


def _payload(data: bytes, key: str, secret: bytes) -> str:
    """The payload text, once the envelope's format, key, sha256 and HMAC all match."""
    envelope = json.loads(data)
    if not isinstance(envelope, dict) or envelope.get("format") != CACHE_FORMAT:
        older = isinstance(envelope, dict) and type(envelope.get("format")) is int and 0 < envelope["format"] < CACHE_FORMAT
        raise _Damaged("was written by an earlier litetext" if older else "is not a manifest litetext wrote")
    if envelope.get("key") != key:
        raise _Damaged("was written for another key")
    payload = envelope.get("payload")
    if not isinstance(payload, str) or hashlib.sha256(payload.encode()).hexdigest() != envelope.get("sha256"):
        raise _Damaged("does not match the sha256 recorded in it (damaged or edited)")
    mac = envelope.get("hmac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, entry_mac(secret, key, payload)):
        raise _Damaged("is not signed with this user's cache key (forged, or written elsewhere)")
    return payload


def _tensors(entries) -> dict[str, torch.Tensor]:
    """[[name, shape, dtype name], ...] -> meta tensors; anything else raises ValueError/TypeError."""
    tensors = {}
    for name, shape, dtype_name in entries:
        dtype = getattr(torch, dtype_name) if isinstance(dtype_name, str) else None
        if not isinstance(name, str) or not isinstance(dtype, torch.dtype) or name in tensors:
            raise ValueError(name)
        if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
            raise ValueError(name)
        tensors[name] = torch.empty(shape, dtype=dtype, device="meta")
    if not tensors:
        raise ValueError("empty")
    return tensors


def _ignored(path: Path, why: str) -> None:
    note(f"ignored the model manifest cache entry {path.name}: it {why}; rebuilding it")
    return None


def _write(path: Path, key: str, secret: bytes, model_class: str, tensors: dict[str, torch.Tensor]) -> None:
    entries = [[name, list(tensor.shape), str(tensor.dtype).removeprefix("torch.")] for name, tensor in tensors.items()]
    payload = json.dumps({"model_class": model_class, "tensors": entries})
    envelope = {"format": CACHE_FORMAT, "key": key, "sha256": hashlib.sha256(payload.encode()).hexdigest(),
                "hmac": entry_mac(secret, key, payload), "payload": payload}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.parent.is_symlink():
            return  # never write through a link someone put in the cache's place
        # Written whole under a temporary name (mode 0600), then renamed: a reader never sees half
        # an entry, and a link or FIFO at the entry's name is replaced, not followed.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as output:
                json.dump(envelope, output)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache folder costs the next run the build, nothing else

"""The one loader of the C++ extensions in ``metods_evo/csrc/``: compile on first use, cache, or fall back quietly.

Each extension is one ``.cpp`` file of ``csrc/`` (with the headers it includes), compiled by
``torch.utils.cpp_extension.load`` into a folder of its own under ``METODS_EVO_KERNEL_DIR`` (where set) or torch's
extension cache, from a copy of the sources in that folder. The folder and the extension are named with a short hash
of the bytes of every file of ``csrc/`` and of the compiler flags (the defines included), so an edited source or
another flag builds a new library instead of reusing a cached one; no version is bumped by hand. Where it cannot
compile (no compiler, no OpenMP, a read-only cache, ...), ``load`` returns ``(None, reason)`` and the caller takes its
torch or Python path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

KERNEL_DIR_ENV = "METODS_EVO_KERNEL_DIR"
"""Environment variable: where the compiled extensions are cached (default: torch's extension directory)."""
SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
"""The C++ sources, shipped as package data."""
SOURCE_SUFFIXES = (".cpp", ".h")


def isa_flags() -> tuple[str, list[str]]:
    """(name tag, compiler flags) of the vectorized kernels. x86 CPUs where torch itself runs its AVX2 (or AVX512)
    kernels get the AVX2 build of ATen's ``Vectorized``; anything else the portable one. Never ``-march=native``:
    the tag names the instruction set, so a cached library is only reused where that instruction set is present."""
    flags = ["-O3", "-fopenmp", "-ffp-contract=off"]  # fp-contract off: FMAs only where the source asks for them
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        return "avx2", flags + ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return "default", flags + ["-DCPU_CAPABILITY=DEFAULT"]


def source_hash(source_dir: Path, *parts: Sequence[str]) -> str:
    """12 hex digits of SHA-256 over the names and bytes of ``source_dir``'s C++ files and over ``parts`` (flags)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source_dir.iterdir() if p.suffix in SOURCE_SUFFIXES):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in parts:
        digest.update(("\0".join(part) + "\1").encode())
    return digest.hexdigest()[:12]


def stage_sources(source_dir: Path, into: str) -> str:
    """Copy ``source_dir``'s C++ files into ``into`` (the build folder, whose name holds their hash), rewriting only
    what differs: the build then reads the same paths from every checkout or installation, so a cached library is
    reused rather than rebuilt for a new source path."""
    os.makedirs(into, exist_ok=True)
    for path in source_dir.iterdir():
        if path.suffix not in SOURCE_SUFFIXES:
            continue
        target, data = os.path.join(into, path.name), path.read_bytes()
        if not os.path.exists(target) or Path(target).read_bytes() != data:
            partial = f"{target}.{os.getpid()}.tmp"
            Path(partial).write_bytes(data)
            os.replace(partial, target)  # atomic: a concurrent build reads the old or the new file, both the same
    return into


def unavailable(what: str, error: BaseException) -> tuple[None, str]:
    """``(None, reason)`` for an extension that could not be built or loaded, logged once as a warning."""
    lines = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {lines[-1] if lines else ''}"
    log.warning("%s unavailable, using the fallback path (%s)", what, reason)
    return None, reason


def load(source: str, what: str, *, cflags: Sequence[str], tag: str = "", include_paths: Sequence[str] = (),
         ldflags: Sequence[str] = (), depends_on: Sequence[str] = (), prefix: str = "metods_evo",
         source_dir: Path = SOURCE_DIR) -> tuple[object | None, str]:
    """(the extension compiled from ``source_dir / source``, "") or (None, why not). ``what`` names it in messages;
    the module is named ``{prefix}_{stem}[_{tag}]_{hash}`` (``source_hash`` of the sources, all flags and
    ``depends_on``: what else the library is built against, e.g. a library's version). It is
    built once per machine (about a minute of one core) and loaded from the cache afterwards; callers keep the
    module (``functools.lru_cache``), as torch loads a given name only once per process."""
    try:
        from torch.utils.cpp_extension import get_default_build_root
        from torch.utils.cpp_extension import load as load_extension

        digest = source_hash(source_dir, cflags, include_paths, ldflags, depends_on)
        name = "_".join(part for part in (prefix, Path(source).stem, tag, digest) if part)
        root = os.environ.get(KERNEL_DIR_ENV) or os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
        build_directory = os.path.join(root, name)
        staged = stage_sources(source_dir, os.path.join(build_directory, "src"))
        print(f"metods-evo: loading the {what} {name} (compiled once per machine, about a minute the first time)",
              file=sys.stderr, flush=True)
        module = load_extension(name=name, sources=[os.path.join(staged, source)], extra_cflags=list(cflags),
                                extra_include_paths=list(include_paths), extra_ldflags=list(ldflags),
                                build_directory=build_directory, verbose=False)
        return module, ""
    except Exception as error:  # no compiler, no OpenMP, read-only cache, ...: the caller's fallback serves
        return unavailable(what, error)

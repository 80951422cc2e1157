"""One-token cached attention on XLA:CPU as a C++ custom call (`kernels/decode_attention.cc`), built on first use.

Why: XLA:CPU runs decode attention's two products as batched dots of tiny per-(row, KV head) matrices,
whose cost follows their number rather than their arithmetic: a quarter to a third of a batch-16 decode step
(bench/RESULTS.md). The kernel scores, normalises and sums one pair in a single pass over the cache slots
its row may read, the pairs shared between the caller and XLA's intra-op threads.

It is built by the machine's C++ compiler (`$CXX`, else the first of c++, g++, clang++ on PATH) against
jaxlib's FFI headers, for this CPU (-march=native), into `$JANUS_KERNEL_CACHE` (default
`~/.cache/janus_jax/kernels`). The file name hashes the source, jaxlib's version, the flags and the CPU, so
a home directory shared by different machines keeps one build per kind of CPU. Without a compiler, or with
`JANUS_CPU_DECODE_KERNEL=0`, decoding takes the XLA path (the same arithmetic), after one warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

log = logging.getLogger(__name__)

SWITCH = "JANUS_CPU_DECODE_KERNEL"  # "0" keeps decoding on the XLA path
CACHE_ENV = "JANUS_KERNEL_CACHE"
TARGET = "janus_decode_attention"
SYMBOL = "JanusDecodeAttention"
SOURCE = Path(__file__).with_name("kernels") / "decode_attention.cc"
# Vectorised sums need reassociation; -ffast-math would also let GCC flush denormals for the whole process.
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
         "-fno-trapping-math")  # fmt: skip
CPU_FLAGS = ("-march=native",)  # dropped, with a second try, where the compiler does not know it

_register_lock = threading.Lock()
_off = threading.local()  # depth of `off(True)` scopes in this thread


class KernelBuildError(RuntimeError):
    """The compiler was missing or failed; the message carries its command and the end of its output."""


def enabled() -> bool:
    """Whether decode attention traced now should call the kernel: JAX's default backend is the CPU, the
    switch is not off, no `off` scope is open, and the kernel builds and registers (once per process)."""
    return (
        os.environ.get(SWITCH, "1") != "0"
        and not getattr(_off, "depth", 0)
        and jax.default_backend() == "cpu"
        and _registered()
    )


@contextlib.contextmanager
def off(when: bool = True) -> Iterator[None]:
    """Trace on XLA's ops inside this scope (when `when`). For programs sharded over several devices: the
    kernel is one custom call, which XLA's partitioner cannot split, so it would gather every operand."""
    _off.depth = getattr(_off, "depth", 0) + int(when)
    try:
        yield
    finally:
        _off.depth -= int(when)


def decode_attention(q_groups: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q_groups [B, K, G, D], k/v [B, K, S, D], mask [B, S] -> [B, K, G, D]; float32 arrays, `enabled()`."""
    out = jax.ShapeDtypeStruct(q_groups.shape, jnp.float32)
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(q_groups, k, v, mask.astype(jnp.bool_))


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "janus_jax" / "kernels"
    return Path(os.environ.get(CACHE_ENV, default))


def compiler() -> str | None:
    """`$CXX` when set (even if it does not exist, so that a wrong setting is reported, not bypassed)."""
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def build(directory: Path | None = None, cxx: str | None = None) -> Path:
    """The kernel's shared library for this source, jaxlib and CPU: from the cache, else compiled into it.

    Several processes may build at once (test workers, hosts sharing a home): each compiles into a
    temporary file and renames it into place, so a reader never sees half a library."""
    directory = directory or cache_dir()
    cxx = cxx or compiler()
    if cxx is None:
        raise KernelBuildError("no C++ compiler: set CXX or install g++ or clang++")
    for flags in (FLAGS + CPU_FLAGS, FLAGS):
        library = directory / f"decode_attention-{_build_key(cxx, flags)}.so"
        if library.exists():
            return library
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            partial = Path(scratch) / library.name
            command = [cxx, *flags, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", str(partial)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            except OSError as e:
                raise KernelBuildError(f"cannot run the C++ compiler {cxx!r}: {e}") from e
            if done.returncode == 0:
                os.replace(partial, library)
                log.info("built the CPU decode-attention kernel: %s", library)
                return library
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    raise KernelBuildError(f"{' '.join(command)} exited {done.returncode}:\n{tail}")


def _build_key(cxx: str, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (jaxlib.__version__, cxx, " ".join(flags), _cpu_identity()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


@functools.cache
def _registered() -> bool:
    with _register_lock:
        try:
            library = ctypes.cdll.LoadLibrary(str(build()))
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(getattr(library, SYMBOL)), platform="cpu")
        except (KernelBuildError, OSError, AttributeError) as e:
            log.warning("CPU decode-attention kernel unavailable, decoding on the XLA path: %s", e)
            return False
    return True

"""XLA flags for the test suite's processes and the programs the tests start."""

# Compiling is most of a cold `make test`, and the tests' programs are tiny and run a few steps each, so the
# tests ask XLA:CPU for quick code generation: LLVM at level 0, without its expensive passes. Measured on a
# whole cold `make test` (2 cores): compile time 667 s -> 356 s, CPU time 22 -> 17 minutes; the few tests
# that run many steps (256 served requests, a gs:// run) got slower, the suite as a whole faster.
COMPILE_FLAGS = "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process with `devices` fake CPU devices."""
    return f"{COMPILE_FLAGS} --xla_force_host_platform_device_count={devices}"

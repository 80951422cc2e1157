"""XLA flags for the test suite's processes and the programs the tests start."""

# LLVM's expensive passes take about a tenth of each compile (measured on the tiny SFT train step: 6.2 s ->
# 5.6 s) and gave these tiny programs no measurable speed. Compiling is most of a cold `make test`.
COMPILE_FLAGS = "--xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process with `devices` fake CPU devices."""
    return f"{COMPILE_FLAGS} --xla_force_host_platform_device_count={devices}"

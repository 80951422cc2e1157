"""N JAX processes on this machine, joined by a local coordinator, supervised as one job.

Each child gets the variables ``janus_jax.sharding.initialize_distributed()`` reads
(``JANUS_COORDINATOR_ADDRESS``, ``JANUS_NUM_PROCESSES``, ``JANUS_PROCESS_ID``) plus its share of fake
CPU devices. Process 0's output streams to the terminal; every process also logs to a file. The first
child to fail brings the whole job down (its exit code is the job's), Ctrl-C or SIGTERM is forwarded
to every child, and children die with the launcher even if it is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_TOTAL_DEVICES = 8
GRACE_SECONDS = 5.0  # after Ctrl-C / SIGTERM: time to write a final checkpoint or manifest
FAILURE_GRACE_SECONDS = 2.0  # after a peer died: collectives cannot progress, so do not wait long
_POLL_SECONDS = 0.05
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S+")
_DISTRIBUTED_VARS = ("JANUS_COORDINATOR_ADDRESS", "JANUS_NUM_PROCESSES", "JANUS_PROCESS_ID")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_devices_per_process(processes: int) -> int:
    """Split 8 fake devices evenly (so N processes see the same 8-device mesh as one process)."""
    return max(1, DEFAULT_TOTAL_DEVICES // processes)


def child_env(
    base: Mapping[str, str], *, coordinator: str, processes: int, process_id: int, devices_per_process: int
) -> dict[str, str]:
    """The environment of local process ``process_id``: coordinator, rank, and its fake CPU devices."""
    env = {k: v for k, v in base.items() if k not in _DISTRIBUTED_VARS}
    xla_flags = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
    device_flag = f"--xla_force_host_platform_device_count={devices_per_process}"
    env.update(XLA_FLAGS=f"{xla_flags} {device_flag}".strip(), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    # Console scripts of this interpreter's environment (janus-train) resolve without activating it.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])])
    if processes > 1:  # one process is a plain single-process run
        env.update(
            JANUS_COORDINATOR_ADDRESS=coordinator, JANUS_NUM_PROCESSES=str(processes), JANUS_PROCESS_ID=str(process_id)
        )
    return env


def exit_code(returncode: int) -> int:
    """Shell-style exit status: a child killed by signal S counts as 128 + S."""
    return 128 - returncode if returncode < 0 else returncode


class LocalJob:
    """Start, watch and stop the processes of one local multi-process job."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        processes: int,
        devices_per_process: int | None = None,
        log_dir: str | os.PathLike,
        env: Mapping[str, str] | None = None,
    ):
        if processes < 1:
            raise ValueError(f"--processes must be >= 1, got {processes}")
        self.argv = list(argv)
        self.processes = processes
        self.devices_per_process = devices_per_process or default_devices_per_process(processes)
        if self.devices_per_process < 1:
            raise ValueError(f"--devices-per-process must be >= 1, got {self.devices_per_process}")
        self.log_dir = Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        self.children: list[subprocess.Popen] = []
        self._pumps: list[threading.Thread] = []
        self._log_files: list = []

    def log_path(self, process_id: int) -> Path:
        return self.log_dir / f"process_{process_id}.log"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        coordinator = f"127.0.0.1:{free_port()}"
        for process_id in range(self.processes):
            env = child_env(
                self.env,
                coordinator=coordinator,
                processes=self.processes,
                process_id=process_id,
                devices_per_process=self.devices_per_process,
            )
            # Appended, so a resumed run keeps the log of the attempt before it.
            log = open(self.log_path(process_id), "ab")  # noqa: SIM115 - closed in close()
            self._log_files.append(log)
            try:
                child = subprocess.Popen(
                    [sys.executable, "-m", "launch.child", *self.argv],
                    env=env,
                    stdout=subprocess.PIPE if process_id == 0 else log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: signals reach its subprocesses too
                )
            except OSError as err:
                self.stop()
                raise RuntimeError(f"cannot start {self.argv[0]!r}: {err}") from err
            self.children.append(child)
            if process_id == 0:
                pump = threading.Thread(target=self._pump, args=(child.stdout, log), daemon=True)
                pump.start()
                self._pumps.append(pump)

    def _pump(self, source, log) -> None:
        """Copy process 0's output to the terminal and its log as it comes (progress bars included)."""
        while chunk := os.read(source.fileno(), 65536):
            log.write(chunk)
            log.flush()
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()

    def signal_all(self, sig: int) -> None:
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, sig)

    def stop(self, first_signal: int = signal.SIGTERM, grace: float = GRACE_SECONDS) -> None:
        """Signal every live child, wait up to ``grace`` seconds, then SIGKILL what is left."""
        self.signal_all(first_signal)
        deadline = time.monotonic() + grace
        while any(c.poll() is None for c in self.children) and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        self.signal_all(signal.SIGKILL)
        for child in self.children:
            child.wait()

    def wait(self) -> int:
        """Block until all children exit 0 (returns 0) or one fails (stops the rest, returns its code)."""
        while True:
            codes = [c.poll() for c in self.children]
            failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                process_id, code = failed[0]
                self._report_failure(process_id, code)
                self.stop(grace=FAILURE_GRACE_SECONDS)
                return exit_code(code)
            if all(code == 0 for code in codes):
                return 0
            time.sleep(_POLL_SECONDS)

    def _report_failure(self, process_id: int, code: int) -> None:
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        others = [i for i, c in enumerate(self.children) if i != process_id and c.poll() is None]
        print(f"[launch] process {process_id} {how}; stopping processes {others}", file=sys.stderr, flush=True)
        if process_id != 0:
            tail = _tail(self.log_path(process_id))
            if tail:
                print(f"[launch] last lines of {self.log_path(process_id)}:\n{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=GRACE_SECONDS)
        for log in self._log_files:
            log.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_local(
    argv: Sequence[str],
    *,
    processes: int,
    devices_per_process: int | None = None,
    log_dir: str | os.PathLike,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``argv`` as ``processes`` cooperating JAX processes; return the job's exit code.

    SIGINT/SIGTERM to the launcher are forwarded to every child (exit code 130 / 143).
    """
    job = LocalJob(argv, processes=processes, devices_per_process=devices_per_process, log_dir=log_dir, env=env)
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        job.start()
        print(
            f"[launch] {processes} local process(es) x {job.devices_per_process} CPU device(s); logs in {job.log_dir}",
            file=sys.stderr,
            flush=True,
        )
        return job.wait()
    except KeyboardInterrupt:
        signum = received[-1] if received else signal.SIGINT
        print(f"[launch] got {signal.Signals(signum).name}; stopping all processes", file=sys.stderr, flush=True)
        # A second Ctrl-C while they shut down kills them at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: job.signal_all(signal.SIGKILL))
        job.stop(first_signal=signum)
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        job.close()

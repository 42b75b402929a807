"""Processes the deployment harness starts: own session, log file, a tag in the environment, and a sure teardown.

Flower's SuperLink and SuperNode start ``flower-superexec`` detached (its own session), which starts the ServerApp
and ClientApp processes; a process group kill misses them and they may be re-parented once their parent dies. So
every process a :class:`ManagedProcess` starts carries ``LFL_HARNESS_TAG=<tag>`` in its environment, which its
descendants inherit, and teardown ends exactly the processes that carry the tag (read from ``/proc``; where there
is no ``/proc`` only the process group is ended).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TAG_VARIABLE = "LFL_HARNESS_TAG"


def tagged_pids(tag: str) -> list[int]:
    """Ids of this user's live processes whose environment holds ``LFL_HARNESS_TAG=<tag>``."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    pids: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class ManagedProcess:
    """One started command: its own session, stdout and stderr in ``log_path``, tagged for teardown.

    Args:
        name: short name, used in the tag and in messages.
        command: the argument list.
        log_path: file that receives stdout and stderr.
        env: the full environment of the process (the tag is added).
        tag: unique to this process and everything it starts.
        cwd: its working directory (where relative paths it writes end up).
    """

    def __init__(self, name: str, command: Sequence[str], log_path: Path, env: Mapping[str, str], tag: str,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.tag = tag
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**env, TAG_VARIABLE: tag},
                cwd=cwd,
                start_new_session=True,
            )

    def alive(self) -> bool:
        """Whether the started process itself still runs."""
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the process, its group and every process that carries its tag (a crash, not a shutdown)."""
        pids = [self.popen.pid, *tagged_pids(self.tag)]
        self._signal_group(signal.SIGKILL)
        _signal_all(pids, signal.SIGKILL)
        self._reap(timeout=5.0)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM everything of this process, wait up to ``grace`` seconds, then SIGKILL what is left."""
        self._signal_group(signal.SIGTERM)
        _signal_all(tagged_pids(self.tag), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.alive() or tagged_pids(self.tag)):
            time.sleep(0.1)
        if self.alive() or tagged_pids(self.tag):
            self.kill()
        self._reap(timeout=5.0)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)  # start_new_session made the pid its group id

    def _reap(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)


def run_command(command: Sequence[str], env: Mapping[str, str], timeout: float, log_path: Path,
                cwd: Path | None = None) -> str:
    """Run a short command to completion and return its stdout; its output is also appended to ``log_path``.

    Raises:
        RuntimeError: if it exits non-zero or runs past ``timeout`` seconds, with its output.
    """
    try:
        done = subprocess.run(
            list(command), env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{' '.join(command)} ran past {timeout} s: {error.stdout!r} {error.stderr!r}") from error
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout

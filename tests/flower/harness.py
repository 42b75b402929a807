"""A Flower deployment on localhost for tests: one SuperLink, N SuperNodes, TLS and SuperNode authentication on.

Everything lives in one working directory: the credentials (:mod:`flower_credentials`), ``FLWR_HOME`` with the Flower
CLI's ``config.toml`` (a SuperLink connection named ``harness`` to the SuperLink with the test CA), and one log file
per process under ``logs/``. Ports are free ports picked at start. Flower 1.42 serves its Fleet, Control and
Runtime APIs on one HTTPS port of the SuperLink; with ``--enable-supernode-auth`` only SuperNodes whose public key
was registered (``flwr supernode register``) may connect.

Example (not run here: it starts processes)::

    with FlowerDeployment(tmp_path, app_dir) as deployment:
        deployment.start(node_configs=[{"partition-id": 0}, {"partition-id": 1}])
        run_id = deployment.start_run({"num-rounds": 3, "metrics-file": str(tmp_path / "m.jsonl")})
        assert deployment.wait_for_run(run_id, timeout=60) == "finished:completed"
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from flower_credentials import Credentials, NodeKey, generate_credentials, generate_node_key
from flower_processes import ManagedProcess, run_command

ConfigValue = bool | int | float | str
REPO_ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "harness"
FINISHED = "finished:"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_executable(name: str) -> str:
    """Path of a Flower console script: next to this interpreter (a venv's ``bin``), else on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither next to {sys.executable} nor on PATH; install lightning-fl[flower]")
    return found


def config_string(config: Mapping[str, ConfigValue]) -> str:
    """``key=value`` pairs the way ``--run-config`` and ``--node-config`` parse them (values in TOML syntax)."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            if '"' in value or " " in value:
                raise ValueError(f"config value for {key!r} must not hold quotes or spaces, got {value!r}")
            text = json.dumps(value)
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, alive: Sequence[ManagedProcess] = ()) -> None:
    """Poll ``condition`` every 0.2 s until it holds.

    Raises:
        TimeoutError: after ``timeout`` seconds, naming ``what``.
        RuntimeError: as soon as one of ``alive`` has exited, with the end of its log.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        for process in alive:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited ({process.popen.returncode}) while waiting for {what}:\n"
                                   f"{process.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


def read_json_lines(path: Path) -> list[dict]:
    """The complete JSON lines of ``path`` (none if it does not exist yet; a half-written last line is left out)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class FlowerDeployment:
    """A SuperLink and SuperNodes on localhost, started by the test and always torn down (use it as a context).

    Every process runs in ``workdir``: relative paths the apps write (loggers, checkpoints) land there.

    Args:
        workdir: an empty directory for credentials, ``FLWR_HOME`` and logs (a pytest ``tmp_path``).
        app_dir: the Flower app project (a directory with a ``pyproject.toml`` holding ``[tool.flwr.app]``).
        enable_supernode_auth: start the SuperLink with ``--enable-supernode-auth`` (only registered keys connect).
        pythonpath: extra import roots for every process; the repository root and ``app_dir`` are always on it.
        startup_timeout: seconds a process may take to come up.
    """

    def __init__(self, workdir: Path, app_dir: Path, *, enable_supernode_auth: bool = True,
                 pythonpath: Sequence[Path] = (), startup_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.app_dir = app_dir
        self.enable_supernode_auth = enable_supernode_auth
        self.startup_timeout = startup_timeout
        self.tag = uuid.uuid4().hex
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.credentials: Credentials = generate_credentials(workdir / "credentials", num_node_keys=0)
        self.port = free_port()
        self.env = self._environment([*pythonpath, REPO_ROOT, app_dir])
        self._write_cli_config()
        self.superlink: ManagedProcess | None = None
        self.supernodes: list[ManagedProcess] = []

    def _environment(self, pythonpath: Sequence[Path]) -> dict[str, str]:
        flwr_home = self.workdir / "flwr-home"
        flwr_home.mkdir(exist_ok=True)
        inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        paths = [str(path) for path in pythonpath] + inherited
        scripts = str(Path(flower_executable("flower-superlink")).parent)  # the SuperLink starts flower-superexec
        return {
            **os.environ,
            "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(paths),
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def _write_cli_config(self) -> None:
        config = (
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.credentials.ca_certificate}"\n'
        )
        (Path(self.env["FLWR_HOME"]) / "config.toml").write_text(config, encoding="utf-8")

    def __enter__(self) -> FlowerDeployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, name: str, command: Sequence[str]) -> ManagedProcess:
        return ManagedProcess(name, command, self.log_dir / f"{name}.log", self.env, f"{self.tag}-{name}", self.workdir)

    def _flwr(self, *args: str, timeout: float = 60.0) -> str:
        command = [flower_executable("flwr"), *args]
        return run_command(command, self.env, timeout, self.log_dir / "flwr-cli.log", self.workdir)

    def start_superlink(self) -> ManagedProcess:
        """Start ``flower-superlink`` with TLS (and SuperNode authentication) and wait until its port accepts."""
        creds = self.credentials
        command = [
            flower_executable("flower-superlink"),
            "--ssl-ca-certfile", str(creds.ca_certificate),
            "--ssl-certfile", str(creds.server_certificate),
            "--ssl-keyfile", str(creds.server_key),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.enable_supernode_auth:
            command.append("--enable-supernode-auth")
        self.superlink = self._start("superlink", command)
        wait_until(lambda: _port_open(self.port), self.startup_timeout, "the SuperLink port", [self.superlink])
        return self.superlink

    def new_node_key(self) -> NodeKey:
        """A fresh SuperNode key pair in the credentials directory (not registered)."""
        index = len(list(self.credentials.ca_certificate.parent.glob("supernode-*.pub")))
        return generate_node_key(self.credentials.ca_certificate.parent, f"supernode-{index}")

    def register_supernode(self, key: NodeKey) -> int:
        """Register ``key``'s public key with the SuperLink (``flwr supernode register``); return the node id."""
        out = self._flwr("supernode", "register", str(key.public_key), CONNECTION, "--format", "json")
        return int(json.loads(out[out.index("{"):])["node-id"])

    def start_supernode(self, node_config: Mapping[str, ConfigValue], key: NodeKey | None = None,
                        max_retries: int | None = None) -> ManagedProcess:
        """Start one ``flower-supernode`` against the SuperLink over TLS, authenticating with ``key`` if given."""
        command = [
            flower_executable("flower-supernode"),
            "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.credentials.ca_certificate),
            "--host", "127.0.0.1", "--port", str(free_port()),
            "--node-config", config_string(node_config),
        ]
        if key is not None:
            command += ["--auth-supernode-private-key", str(key.private_key)]
        if max_retries is not None:
            command += ["--max-retries", str(max_retries)]
        process = self._start(f"supernode-{len(self.supernodes)}", command)
        self.supernodes.append(process)
        return process

    def start(self, node_configs: Sequence[Mapping[str, ConfigValue]]) -> list[int]:
        """Start the SuperLink, register one new key per node config and start those SuperNodes; return node ids."""
        self.start_superlink()
        node_ids = []
        for node_config in node_configs:
            key = self.new_node_key()
            if self.enable_supernode_auth:
                node_ids.append(self.register_supernode(key))
            self.start_supernode(node_config, key)
        return node_ids

    def start_run(self, run_config: Mapping[str, ConfigValue]) -> int:
        """``flwr run <app_dir> harness --run-config ...``; return the run id."""
        args = ["run", str(self.app_dir), CONNECTION, "--format", "json"]
        if run_config:
            args += ["--run-config", config_string(run_config)]
        out = self._flwr(*args)
        return int(json.loads(out[out.index("{"):])["run-id"])

    def run_status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it, e.g. ``running`` or ``finished:completed``."""
        out = self._flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out[out.index("{"):])["runs"]
        return str(runs[0]["status"]) if runs else "unknown"

    def wait_for_file(self, path: Path, timeout: float) -> None:
        """Wait until ``path`` exists (a marker or metrics file an app writes); fail early if the SuperLink died."""
        alive = [self.superlink] if self.superlink is not None else []
        wait_until(path.exists, timeout, f"{path} to appear", alive)

    def wait_for_lines(self, path: Path, count: int, timeout: float) -> list[dict]:
        """Wait until the JSON-lines file ``path`` holds ``count`` lines; return them parsed."""
        alive = [self.superlink] if self.superlink is not None else []
        wait_until(lambda: len(read_json_lines(path)) >= count, timeout, f"{count} lines in {path}", alive)
        return read_json_lines(path)

    def wait_for_log(self, name: str, text: str, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until the log of process ``name`` (``superlink``, ``supernode-1``, ...) holds ``text`` ``count`` times.

        A SuperNode's log also holds what its ClientApp processes print; ``Receiving: train message`` appears when
        it pulls a round's message, so its ``r + 1``-th occurrence marks round ``r`` started on that node.
        """
        path = self.log_dir / f"{name}.log"
        alive = [self.superlink] if self.superlink is not None else []

        def seen() -> bool:
            return path.exists() and path.read_text(encoding="utf-8", errors="replace").count(text) >= count

        wait_until(seen, timeout, f"{count} x {text!r} in {name}.log", alive)

    def wait_for_run(self, run_id: int, timeout: float, poll: float = 2.0) -> str:
        """Wait until the run has finished; return its final status (``finished:completed`` on success).

        Raises:
            TimeoutError: when it has not finished after ``timeout`` seconds (with the SuperLink log's end).
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.run_status(run_id)
            if status.startswith(FINISHED):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {status!r} after {timeout} s; logs:\n{self.log_tail()}")
            time.sleep(poll)

    def kill_supernode(self, index: int) -> None:
        """SIGKILL SuperNode ``index`` and everything it started (its SuperExec, its ClientApp): a crash."""
        self.supernodes[index].kill()

    def processes(self) -> list[ManagedProcess]:
        """Every long-running process started so far, SuperLink first."""
        return ([self.superlink] if self.superlink is not None else []) + self.supernodes

    def logs(self) -> dict[str, str]:
        """Each log file under ``logs/`` by name (``superlink``, ``supernode-0``, ..., ``flwr-cli``)."""
        return {path.stem: path.read_text(encoding="utf-8", errors="replace") for path in self.log_dir.glob("*.log")}

    def log_tail(self, chars: int = 2000) -> str:
        """The end of every log, for failure messages."""
        return "\n".join(f"--- {name} ---\n{text[-chars:]}" for name, text in sorted(self.logs().items()))

    def close(self) -> None:
        """Stop the SuperNodes, then the SuperLink, and everything they started; safe to call twice."""
        for process in reversed(self.processes()):
            process.stop()

"""The deployment harness's pieces that need no Flower process: credentials, config strings, JSON lines, teardown."""

from __future__ import annotations

import ipaddress
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from flower_credentials import generate_credentials
from flower_processes import ManagedProcess, tagged_pids
from flwr.cli.supernode.register import try_load_public_key
from flwr.common.config import parse_config_args
from harness import config_string, read_json_lines


def test_credentials_chain_to_the_ca_and_name_localhost(tmp_path: Path) -> None:
    creds = generate_credentials(tmp_path, num_node_keys=2)
    ca = x509.load_pem_x509_certificate(creds.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(creds.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)  # raises unless the CA signed it
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    key = load_pem_private_key(creds.server_key.read_bytes(), None)
    assert key.public_key() == server.public_key()
    for node_key in creds.node_keys:  # what flower-supernode and flwr supernode register read
        private = load_ssh_private_key(node_key.private_key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert try_load_public_key(node_key.public_key)
    assert len({node_key.public_key.read_bytes() for node_key in creds.node_keys}) == 2


def test_config_string_is_what_flower_parses() -> None:
    config = {"partition-id": 1, "round-timeout": 2.5, "metrics-file": "/tmp/m.jsonl", "flag": True}
    assert parse_config_args([config_string(config)]) == config
    with pytest.raises(ValueError, match="'name' must not hold quotes or spaces, got 'a b'"):
        config_string({"name": "a b"})


def test_read_json_lines_leaves_out_a_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    assert read_json_lines(path) == []
    path.write_text('{"round": 0}\n{"round": 1}\n{"rou', encoding="utf-8")
    assert read_json_lines(path) == [{"round": 0}, {"round": 1}]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the teardown finds descendants through /proc")
def test_stop_ends_a_detached_grandchild(tmp_path: Path) -> None:
    # Like flower-superexec: started in its own session by the process the harness started.
    grandchild = ("import subprocess, sys, time; "
                  "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
                  "time.sleep(60)")
    process = ManagedProcess("parent", [sys.executable, "-c", grandchild], tmp_path / "p.log",
                             {"PATH": "/usr/bin:/bin"}, uuid.uuid4().hex)
    started = time.monotonic()
    while len(tagged_pids(process.tag)) < 2 and time.monotonic() - started < 20:
        time.sleep(0.1)
    assert len(tagged_pids(process.tag)) == 2
    process.stop(grace=1.0)
    assert tagged_pids(process.tag) == []

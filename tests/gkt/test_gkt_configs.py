"""The FedGKT YAML configs parse into the objects they describe (running them is the CLI's test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_fl.cli import FederatedCLI
from lightning_fl.datamodules import FederatedDataModule
from lightning_fl.gkt import FedGKTModule, ResNet8Client, ResNetServerBody

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(("name", "channels", "dataset"), [("fedgkt_digits", 1, "Digits"),
                                                           ("fedgkt_cifar10", 3, "TorchvisionDataset")])
def test_config_builds_a_fedgkt_module_and_federated_data(tmp_path, name, channels, dataset):
    cli = FederatedCLI(args=["--config", str(CONFIGS / f"{name}.yaml"), f"--trainer.default_root_dir={tmp_path}",
                             "--trainer.logger=false", "--trainer.accelerator=cpu"], run=False)
    model, dm = cli.model, cli.datamodule
    assert isinstance(model, FedGKTModule) and isinstance(dm, FederatedDataModule)
    assert isinstance(model.client, ResNet8Client) and model.client.stem[0].in_channels == channels
    assert isinstance(model.server_body, ResNetServerBody) and model.server_body.depth == 56
    assert type(dm.source).__name__ == dataset
    assert model.hparams["temperature"] == 3.0

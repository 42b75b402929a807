"""The ``lightning-fl`` command: LightningCLI for federated training, plus ``lightning-fl partition``.

``lightning-fl fit --config configs/fedavg_digits.yaml`` trains; every class's typed ``__init__`` is its schema,
so ``--data.clients_per_round=20`` or ``--trainer.max_epochs=5`` override the YAML. The CLI adds what
federated training needs: the Trainer flags of :func:`federated_trainer_defaults`, a :class:`FederatedAveraging`
callback when the config has no server callback, and the :class:`FederatedDDPStrategy` whenever more than one
device is requested with ``strategy: auto``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningCLI

from lightning_fl.callbacks.fedavg import FederatedAveraging
from lightning_fl.datamodules.federated import FederatedDataModule, dataset_targets
from lightning_fl.datamodules.report import partition_report, plot_partition
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.strategies import FederatedDDPStrategy
from lightning_fl.trainer import federated_trainer_defaults


class FederatedCLI(LightningCLI):
    """LightningCLI whose data is a :class:`FederatedDataModule` and whose Trainer is set up for rounds."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", federated_trainer_defaults())
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            LightningModule,
            FederatedDataModule,
            subclass_mode_model=True,
            subclass_mode_data=False,
            args=args,
            **kwargs,
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the server callback if missing (unless the module keeps per-client models and declares
        ``uses_weight_averaging = False``, as FedGKT does) and pick the federated strategy for several devices."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        averaging = getattr(self.model, "uses_weight_averaging", True)
        if averaging and not any(isinstance(cb, FederatedAveraging) for cb in callbacks):
            kwargs["callbacks"] = [*callbacks, FederatedAveraging()]
        if config.get("strategy", "auto") == "auto" and _device_count(config) > 1:
            kwargs["strategy"] = FederatedDDPStrategy()
        return super().instantiate_trainer(**kwargs)


def _device_count(trainer_config: dict[str, Any]) -> int:
    devices = trainer_config.get("devices", "auto")
    accelerator = str(trainer_config.get("accelerator", "auto"))
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices not in ("auto", "-1"):
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


def partition_main(argv: list[str]) -> None:
    """``lightning-fl partition --config C [--plot out.png] [--data.ARG=VALUE ...]``: print the client sizes and
    label histograms of the config's data module, and optionally draw them."""
    config_path, rest = _pop_flag(argv, "--config")
    if config_path is None:
        raise FederatedConfigError("lightning-fl partition needs --config PATH (a lightning-fl YAML config)")
    parser = ArgumentParser(prog="lightning-fl partition", description=partition_main.__doc__)
    parser.add_argument("--plot", type=str | None, default=None, help="Write a PNG of label counts per client here")
    parser.add_class_arguments(FederatedDataModule, "data")
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    parser.set_defaults({f"data.{k}": v for k, v in (raw.get("data") or {}).items()})
    cfg = parser.parse_args(rest)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    dm.setup("fit")
    assert dm.train_dataset is not None
    labels = dataset_targets(dm.train_dataset)
    report = partition_report(dm.client_indices, labels)
    print(report.summary())
    if cfg.plot:
        path = plot_partition(dm.client_indices, labels, cfg.plot)
        print(f"wrote {path}")


def _pop_flag(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of ``flag`` (``--flag V`` or ``--flag=V``) and ``argv`` without it."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-fl`` console script."""
    argv = sys.argv[1:] if args is None else args
    try:
        if argv and argv[0] == "partition":
            partition_main(argv[1:])
        else:
            FederatedCLI(args=argv)
    except FederatedConfigError as err:
        sys.exit(f"lightning-fl: error: {err}")


if __name__ == "__main__":
    main()

"""The ``lightning-fl`` command: LightningCLI for federated training, plus ``lightning-fl partition``.

``lightning-fl fit --config configs/fedavg_digits.yaml`` trains; every class's typed ``__init__`` is its schema,
so ``--data.clients_per_round=20`` or ``--trainer.max_epochs=5`` override the YAML. The CLI adds what
federated training needs: the Trainer flags of :func:`federated_trainer_defaults`, a :class:`FederatedAveraging`
callback when the config has no server callback, and the :class:`FederatedDDPStrategy` whenever more than one
device is requested with ``strategy: auto``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError, ArgumentParser
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningCLI

from lightning_fl.checkpoint import SafeCheckpointIO
from lightning_fl.cli_errors import ERROR_EXIT_CODE, package_error
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.report import partition_report, plot_partition
from lightning_fl.exceptions import CheckpointError, FederatedConfigError
from lightning_fl.federation.host import FederatedAveraging
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

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the checkpoint's hyperparameters before training: report an unreadable file as a
        :class:`CheckpointError` instead of torch's error (Lightning's private hook, overridden for its message)."""
        try:
            super()._parse_ckpt_path()
        except (SystemExit, ArgumentError):
            raise
        except Exception as err:
            path = self.config[self.config.subcommand].get("ckpt_path")
            SafeCheckpointIO(TorchCheckpointIO()).load_checkpoint(path, map_location="cpu")  # raises the clear error
            raise CheckpointError(f"checkpoint {str(path)!r} could not be read: {err}") from err

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Load checkpoints weights-only unless ``--weights_only`` says otherwise (torch < 2.6 defaulted to
        ``False``, which can run code from a downloaded file)."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in kwargs and kwargs["weights_only"] is None:
            kwargs["weights_only"] = True
        return kwargs


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
    parser = ArgumentParser(prog="lightning-fl partition", description=partition_main.__doc__, exit_on_error=False)
    parser.add_argument("--plot", type=str | None, default=None, help="Write a PNG of label counts per client here")
    parser.add_class_arguments(FederatedDataModule, "data")
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    parser.set_defaults({f"data.{k}": v for k, v in (raw.get("data") or {}).items()})
    cfg = parser.parse_args(rest)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    dm.setup("fit")
    try:
        labels = dm.train_labels("lightning-fl partition's label histograms")
    except FederatedConfigError as err:  # no class labels (language-model data): report the client sizes alone
        labels = None
        print(f"no label histograms: {err}")
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
    """Entry point of the ``lightning-fl`` console script (``args``: instead of the command line).

    The working directory goes first on ``sys.path``, as with ``python -m``: ``--model.class_path=my_module.MyModel``
    finds ``./my_module.py`` without ``PYTHONPATH=.``. A configuration error (an error of lightning-fl's own, raised
    while the classes are built or while training is set up or resumed, or an argument the parser refuses) is printed
    as one line, ``lightning-fl: error: ...``, and exits with status 2; other errors keep their traceback.
    """
    argv = sys.argv[1:] if args is None else args
    _put_working_directory_on_path()
    try:
        with warnings.catch_warnings():
            # main(args) is the deliberate in-process use: LightningCLI's warning about args next to sys.argv is noise
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            if argv and argv[0] == "partition":
                partition_main(argv[1:])
            else:
                FederatedCLI(args=argv, parser_kwargs=_no_exit_on_error())
    except Exception as err:
        message = package_error(err)
        if message is None:
            raise
        print(f"lightning-fl: error: {message}", file=sys.stderr)
        sys.exit(ERROR_EXIT_CODE)


def _no_exit_on_error() -> dict[str, Any]:
    """Parser arguments that make jsonargparse raise its errors (with their causes) instead of exiting."""
    return {"exit_on_error": False, **{name: {"exit_on_error": False} for name in LightningCLI.subcommands()}}


def _put_working_directory_on_path() -> None:
    cwd = os.getcwd()
    if not any(entry in ("", ".", cwd) for entry in sys.path):
        sys.path.insert(0, cwd)


if __name__ == "__main__":
    main()

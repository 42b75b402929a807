"""A DDP strategy for federated training: processes share the work of a round, never a gradient."""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning_fabric.strategies import _StrategyRegistry
from pytorch_lightning.strategies import DDPStrategy
from torch.nn.parameter import is_lazy
from typing_extensions import override


class FederatedDDPStrategy(DDPStrategy):
    """Runs one process per device, each training its own share of a round's clients.

    Lightning's :class:`~pytorch_lightning.strategies.DDPStrategy` wraps the module in
    ``DistributedDataParallel``, which averages gradients in every backward pass: with federated training that
    silently blends two clients' gradients and deadlocks on uneven work. This subclass keeps everything else
    of DDP (process launch, process group, ``reduce``/``broadcast``, sharded evaluation) but does not wrap the
    module; it broadcasts the initial weights from rank 0 instead. The server callback then combines the ranks'
    client updates with one all-reduce per round.

    Registered as ``strategy="federated_ddp"`` (subprocess launch, as ``"ddp"``) and ``"federated_ddp_spawn"``.

    Example:
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=FederatedDDPStrategy(), logger=False)
        >>> type(trainer.strategy).__name__
        'FederatedDDPStrategy'
    """

    strategy_name = "federated_ddp"

    @override
    def configure_ddp(self) -> None:
        assert self.model is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            with torch.no_grad():
                for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                    if not is_lazy(tensor):  # lazy ones are broadcast once materialised, at fit start
                        dist.broadcast(tensor.data, src=0)

    @override
    def teardown(self) -> None:
        super().teardown()
        # A spawned worker exits right after the fit. Left to process exit, gloo's threads were torn down mid-way
        # and aborted the worker ("terminate called without an active exception", SIGABRT, about one run in four
        # on 2 busy cores); closing the group here, while every rank is still alive, ends them in order.
        if self._start_method == "spawn" and dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: _StrategyRegistry) -> None:
        for name, start_method in (("federated_ddp", "popen"), ("federated_ddp_spawn", "spawn")):
            if name not in strategy_registry:
                strategy_registry.register(
                    name,
                    cls,
                    description=f"Federated DDP (no gradient averaging), start_method '{start_method}'",
                    start_method=start_method,
                )

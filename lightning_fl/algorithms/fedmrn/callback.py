"""FedMRN (Li et al., ACM MM 2024): clients learn 1-bit masks over seeded random noise and upload only those."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.utils import parametrize
from typing_extensions import override

from lightning_fl.algorithms.fedmrn.parametrization import MaskedNoise
from lightning_fl.checks import check_bool, check_strings
from lightning_fl.codecs.base import Codec
from lightning_fl.codecs.masked_noise import MaskedNoiseCodec
from lightning_fl.codecs.noise_masks import MaskKind, NoiseKind, check_masked_noise
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm, FederatedContext
from lightning_fl.federation.flat import FlatState
from lightning_fl.seeding import generator

_MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ORIGINAL = ".parametrizations.weight.original"
_LATENT = ".parametrizations.weight.0.u"


class MaskedRandomNoise(FederatedAlgorithm):
    """Turns every ``nn.Linear`` and ``nn.Conv*`` weight (or those named in ``modules``) into
    ``W_frozen + n * m(u)`` for the round, without touching the model's code.

    At setup the weights are reparametrized (``torch.nn.utils.parametrize``) before the optimizers are configured, so
    the module's own ``configure_optimizers`` sees the latent ``u`` and not the frozen ``W``. At each client's start
    ``u`` is reset to zero and the noise drawn from a 63-bit seed (sent as 8 bytes) derived from
    ``(seed, round, client, tensor)``; the progressive masking horizon ``T`` is the client's number of local steps.
    At the client's end a fresh mask
    is sampled and the update ``n * m`` travels through :class:`MaskedNoiseCodec` (the packed mask and the seed);
    the server regenerates the noise and averages ``n * m`` with FedAvg weights into ``W``. All other tensors
    (biases, norms) train normally and travel through the uplink codec as ordinary updates. When the fit ends the
    parametrization is removed: the module is the user's ordinary model again, holding the global weights.

    Args:
        mask: ``"binary"`` ({0, 1}) or ``"signed"`` ({-1, +1}).
        noise: ``"uniform"`` on (-1, 1), ``"gaussian"`` or ``"rademacher"``.
        sigma: Noise scale; ``None`` takes the published default (0.01 binary, 0.005 signed).
        progressive: Progressive stochastic masking (``p_t = t / T``); ``False`` samples every element every step.
        modules: Names of the modules to mask (``None``: every Linear and Conv layer); one string is one name.

    Example:
        >>> MaskedRandomNoise(mask="signed").sigma
        0.005
    """

    # Refused in vectorized mode: each layer's parametrization (MaskedNoise) holds one client's noise, seeded at that
    # client's start, and a step counter for progressive masking advanced per step; a chunk of stacked clients would
    # all train under the noise of the client that started last.
    supports_cohorts = False

    def __init__(
        self,
        mask: MaskKind = "binary",
        noise: NoiseKind = "uniform",
        sigma: float | None = None,
        progressive: bool = True,
        modules: str | Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        sigma = (0.01 if mask == "binary" else 0.005) if sigma is None else sigma
        check_masked_noise(mask, noise, sigma)
        self.mask: MaskKind = mask
        self.noise: NoiseKind = noise
        self.sigma = float(sigma)
        self.progressive = check_bool("progressive", progressive)
        self.modules = None if modules is None else list(check_strings("modules", modules, allow_empty=False))
        self.codec = MaskedNoiseCodec(mask, noise, self.sigma)
        self._layers: dict[str, MaskedNoise] = {}  # state name of W -> its parametrization
        self._modules: list[nn.Module] = []

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and not self._layers:
            self._layers = self._reparametrize(pl_module)

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        """Give the user back an ordinary model whose weights are the global ``W`` (the latents are per-round
        client state). Checkpoints taken during training keep the parametrized form, from which a fit resumes."""
        if stage != "fit":
            return
        for module in self._modules:
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                module.weight.requires_grad_(True)
        self._layers, self._modules = {}, []

    def _reparametrize(self, pl_module: nn.Module) -> dict[str, MaskedNoise]:
        named = dict(pl_module.named_modules())
        if self.modules is None:
            chosen = [name for name, mod in named.items() if isinstance(mod, _MASKABLE)]
        else:
            unknown = [n for n in self.modules if n not in named]
            if unknown:
                raise FederatedConfigError(
                    f"modules must name modules of the model, got unknown {unknown}; known Linear/Conv modules: "
                    f"{[n for n, m in named.items() if isinstance(m, _MASKABLE)]}"
                )
            chosen = list(self.modules)
        if not chosen:
            raise FederatedConfigError("MaskedRandomNoise found no nn.Linear or nn.Conv layer to mask in the model")
        layers: dict[str, MaskedNoise] = {}
        for name in chosen:
            module = named[name]
            if not isinstance(module, _MASKABLE):
                raise FederatedConfigError(
                    f"modules may name nn.Linear and nn.Conv layers only, got {name!r} of type {type(module).__name__}"
                )
            mn = MaskedNoise(module.weight.shape, self.mask, self.noise, self.sigma, self.progressive)
            mn.to(module.weight.device)
            parametrize.register_parametrization(module, "weight", mn, unsafe=True)
            module.parametrizations.weight.original.requires_grad_(False)  # type: ignore[union-attr]
            self._modules.append(module)
            layers[f"{name}{_ORIGINAL}" if name else _ORIGINAL.lstrip(".")] = mn
        return layers

    # ------------------------------------------------------------------ seam
    def global_tensor_names(self, pl_module: "pl.LightningModule") -> set[str]:
        """The frozen weights ``W`` are global state (the server updates them) although nothing trains them."""
        return set(self._layers)

    def local_tensor_names(self, pl_module: "pl.LightningModule", state: FlatState) -> set[str]:
        """The latents ``u`` never leave the client (they restart from zero every round)."""
        return {name.replace(_ORIGINAL, _LATENT) for name in self._layers}

    def uplink_codec_for(self, name: str) -> Codec | None:
        """:class:`MaskedNoiseCodec` for the masked weights; the ordinary uplink codec for everything else."""
        return self.codec if name in self._layers else None

    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        positions = {spec.name: i for i, spec in enumerate(context.state.float_specs)}
        self._positions = {name: positions[name] for name in self._layers}
        for mn in self._layers.values():
            mn.to(context.state.device)

    def on_client_start(self, client: ClientContext) -> None:
        for name, mn in self._layers.items():
            mn.start_round(self._noise_seed(client, name), total_steps=max(client.num_batches, 1))

    def _noise_seed(self, client: ClientContext, name: str) -> int:
        # the seed the uplink link derives for this tensor: the codec regenerates the same noise from it
        return self.context.seed_for("uplink", client.round_idx, client.client_id, name)

    @override
    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for mn in self._layers.values():
            mn.step += 1

    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        for name, mn in self._layers.items():
            gen = generator(self.context.seed, "fedmrn-upload", client.round_idx, client.client_id, name,
                            device=mn.u.device)
            views[self._positions[name]].copy_(mn.noise * mn.upload_mask(gen))

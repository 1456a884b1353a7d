"""Mixture-of-Experts brain encoder (MoRE-Brain): routed experts over the units of a per-subject input layer.

Pipeline for one subject: betas (batch, n_voxels) → input layer ("ridge") → units (batch, hidden) → levels of
experts. Every unit is a token with one feature (its value); a router turns it into probabilities over experts
(softmax of ``value × w_e`` plus, optionally, a learned per-unit preference) and a dispatch rule picks which units each
expert receives:

- **expert choice** (MoRE-Brain): each expert takes its ``top_k = n_units / n_experts × capacity_factor`` most probable
  units; a unit may go to several experts or to none.
- **token choice** (Switch/GShard): each unit picks its ``top_k`` experts; an expert keeps at most
  ``ceil(capacity_factor × n_units × top_k / n_experts)`` units (highest probability first), the rest are dropped.

An expert sees its units scaled by their probability. Topologies:

- ``flat``: one level, ``n_experts = (E,)``.
- ``multi``: several independent levels (e.g. 2/4/8/16 experts), each routing the same input units; every expert is a
  residual MLP of width ``hidden / E_level × capacity_factor``.
- ``hierarchical`` (MoRE-Brain ``BrainMoEMulti``): level 0 routes the input units to residual-MLP experts; on each
  further level every parent expert routes its own hidden units among its ``E_l / E_{l-1}`` children
  (child = ``Linear(parent width → parent width / n_children)``).

Each expert has its own output Linear to the target; a level's output is the sum over its experts, and the embedding
is the mean over levels (per-level stacks are in ``EncoderOutput.extras["levels"]``). The load-balancing loss is in
``EncoderOutput.aux_losses["load_balance"]``, averaged over levels.

Differences from MoRE-Brain's code, on purpose:

- Routing is over input-layer ("ridge") units, as in the code, not over voxels as the paper describes; voxel-level
  routing for the expert views is attributed back through the input layer or by gradient × input
  (``engine.models.routing.voxel_routing``).
- An expert receives a dense, unit-indexed vector (unselected units are zero) rather than its selected units gathered in
  top-k order, so each input position keeps one meaning across trials.
- ``router_unit_bias`` (default on) adds a learned per-unit, per-expert logit: the code's router sees only a unit's
  value, so it cannot prefer a unit by identity. Set it to false for the code's router.
- The code's balancing term is computed from top-k indices and carries no gradient, and its deeper levels' terms are
  dropped; here the ``mse`` term is the MSE between each expert's mean routing probability and 1/E, averaged over
  parents and levels (``switch`` is the Switch-Transformer term E·Σ f_e·P_e, which is 1 at balance).
- One retrieval projector on the combined embedding instead of one per expert.
- ``roi_groups`` (optional, off by default) makes the input layer ROI-aware: its units are split into one block per
  group of ROIs (e.g. early visual V1–V3 / hV4 / category LO + VOT) and a unit only reads its own group's voxels, so a
  unit — the token the routers dispatch — carries one brain region's signal, routing can specialise by region and the
  expert × ROI tables are exact rather than smeared through a dense layer. The trainer assigns each voxel its group
  from the subject's ROIs (``set_voxel_groups``); voxels in none of the groups feed every unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.config import check
from engine.models.base import BrainEncoder, EncoderOutput, RetrievalProjector
from engine.models.config import ModelConfig
from engine.models.moe_experts import ExpertLevel

TOPOLOGIES = ("flat", "multi", "hierarchical")
ROUTINGS = ("expert_choice", "token_choice")


@dataclass(frozen=True)
class MoEConfig(ModelConfig):
    """Settings of ``MoEEncoder`` (defaults: MoRE-Brain's layout at a quarter of its width).

    Attributes
    ----------
    hidden : int
        Units of the per-subject input layer (MoRE-Brain: 4096).
    topology : {"flat", "multi", "hierarchical"}
    n_experts : tuple of int
        Experts per level, e.g. (2, 4, 8, 16). ``flat`` needs one level; ``hierarchical`` needs each level to be a
        multiple of the previous one.
    routing : {"expert_choice", "token_choice"}
    top_k : int
        Experts each unit picks (token choice only).
    capacity_factor : float
        Scales how many units an expert takes (1.0: an even share).
    router_noise : float
        Std of the Gaussian noise added to routing probabilities while training (MoRE-Brain: 0.001).
    router_init : float
        Router weights start uniform in ±router_init (1e-4).
    router_unit_bias : bool
        Learn a per-unit preference for each expert (see module notes).
    expert_width : int
        Width of level-0 experts; 0 means ``hidden / n_experts[0] × capacity_factor`` (MoRE-Brain: 2048).
    n_blocks : int
        Residual blocks per residual-MLP expert (4).
    dropout : float
        Dropout in the residual blocks (0.15).
    balance : {"mse", "switch"}
        Load-balancing term.
    retrieval : bool
        Build the retrieval projector.
    projector_hidden : int
        Projector width; 0 means the embedding's last dimension.
    roi_groups : list of lists of str
        ROI-aware input layer (see module notes): one block of units per group, e.g.
        ``[["V1", "V2", "V3"], ["hV4"], ["LO", "VOT"]]``; empty = a dense input layer (MoRE-Brain).
    roi_group_prior : float
        With ``roi_groups`` and ``router_unit_bias``: the learned per-unit router logits of every level that routes
        input units start at this value for the expert ``floor(g × E / G)`` of the unit's group g (G groups, E experts),
        0 elsewhere, so routing starts region by region and training keeps or changes it. 0 = no prior: routers
        start uniform (their gradients have no consistent direction to split regions apart, so they stay mixed).
    """

    hidden: int = 1024
    topology: Literal["flat", "multi", "hierarchical"] = "hierarchical"
    n_experts: tuple[int, ...] = (2, 4, 8, 16)
    routing: Literal["expert_choice", "token_choice"] = "expert_choice"
    top_k: int = 1
    capacity_factor: float = 1.0
    router_noise: float = 1e-3
    router_init: float = 1e-4
    router_unit_bias: bool = True
    expert_width: int = 0
    n_blocks: int = 4
    dropout: float = 0.15
    balance: Literal["mse", "switch"] = "mse"
    retrieval: bool = True
    projector_hidden: int = 0
    roi_groups: tuple[tuple[str, ...], ...] = ()
    roi_group_prior: float = 0.0

    def validate(self) -> None:
        name = type(self).__name__
        check(self.hidden > 0, name, "hidden", "a positive integer", self.hidden)
        check(all(len(g) >= 1 for g in self.roi_groups), name, "roi_groups",
              "a list of non-empty lists of ROI names", [list(g) for g in self.roi_groups])
        names = [r for g in self.roi_groups for r in g]
        check(len(names) == len(set(names)), name, "roi_groups", "each ROI in at most one group",
              [list(g) for g in self.roi_groups])
        check(self.roi_group_prior >= 0, name, "roi_group_prior", "a number >= 0", self.roi_group_prior)
        check(self.hidden >= len(self.roi_groups), name, "hidden", f"at least one unit per ROI group "
              f"({len(self.roi_groups)})", self.hidden)
        check(self.topology in TOPOLOGIES, name, "topology", f"one of {list(TOPOLOGIES)}", self.topology)
        check(self.routing in ROUTINGS, name, "routing", f"one of {list(ROUTINGS)}", self.routing)
        check(len(self.n_experts) >= 1 and all(e >= 1 for e in self.n_experts), name, "n_experts",
              "a non-empty list of positive integers", list(self.n_experts))
        if self.topology == "flat":
            check(len(self.n_experts) == 1, name, "n_experts", "one level for topology 'flat'", list(self.n_experts))
        if self.topology == "hierarchical":
            ok = all(b % a == 0 and b > a for a, b in zip(self.n_experts, self.n_experts[1:]))
            check(ok, name, "n_experts", "each level a larger multiple of the previous one (e.g. 2, 4, 8, 16) "
                  "for topology 'hierarchical'", list(self.n_experts))
        check(self.top_k >= 1, name, "top_k", "an integer >= 1", self.top_k)
        check(self.capacity_factor > 0, name, "capacity_factor", "a number > 0", self.capacity_factor)
        check(self.router_noise >= 0, name, "router_noise", "a number >= 0", self.router_noise)
        check(self.router_init >= 0, name, "router_init", "a number >= 0", self.router_init)
        check(self.expert_width >= 0, name, "expert_width", "an integer >= 0", self.expert_width)
        check(self.n_blocks >= 0, name, "n_blocks", "an integer >= 0", self.n_blocks)
        check(0.0 <= self.dropout < 1.0, name, "dropout", "a number in [0, 1)", self.dropout)
        check(self.balance in ("mse", "switch"), name, "balance", "'mse' or 'switch'", self.balance)
        check(self.projector_hidden >= 0, name, "projector_hidden", "an integer >= 0", self.projector_hidden)


class RoiGroupedLinear(nn.Linear):
    """``Linear(n_voxels → hidden)`` whose units are split into ``n_groups`` contiguous blocks; unit u of block g reads
    only the voxels of group g (``voxel_group``, a buffer saved with the weights; -1 = a voxel of no group, read by
    every unit). Until ``voxel_group`` is set every voxel is -1 and the layer is dense."""

    def __init__(self, n_voxels: int, hidden: int, n_groups: int) -> None:
        super().__init__(n_voxels, hidden)
        self.n_groups = n_groups
        self.register_buffer("voxel_group", torch.full((n_voxels,), -1, dtype=torch.int64))
        self.register_buffer("unit_group", torch.arange(hidden) * n_groups // hidden, persistent=False)

    def set_voxel_groups(self, groups) -> None:
        g = torch.as_tensor(np.asarray(groups), dtype=torch.int64)
        if g.shape != self.voxel_group.shape or bool(((g < -1) | (g >= self.n_groups)).any()):
            raise ValueError(f"voxel groups: expected {tuple(self.voxel_group.shape)} integers in "
                             f"[-1, {self.n_groups}), found shape {tuple(g.shape)}")
        self.voxel_group.copy_(g.to(self.voxel_group.device))

    def mask(self) -> torch.Tensor:
        """(hidden, n_voxels) bool: which voxels each unit reads."""
        v = self.voxel_group[None, :]
        return (self.unit_group[:, None] == v) | (v < 0)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.mask().to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


# --------------------------------------------------------------------------------------------------------------------
# Routing records
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelRouting:
    """Routing of one level over a set of trials (numpy, float32).

    Attributes
    ----------
    weights : ndarray, shape (n_trials, n_units, n_experts)
        Probability × selection of each unit for each expert (0 where the expert did not take the unit). Units are the
        input layer's units (``source == "input"``) or, on deeper hierarchical levels, the parents' hidden units laid
        end to end (parent p's units are rows ``p·units_per_parent ...``; zero outside the parent's own children).
    usage : ndarray, shape (n_trials, n_experts)
        Each expert's share of the level's routed weight in that trial (rows sum to 1).
    parents : ndarray of int, shape (n_experts,)
        Index of each expert's parent on the previous level; -1 where the level routes input units.
    source : {"input", "parent"}
    """

    weights: np.ndarray
    usage: np.ndarray
    parents: np.ndarray
    source: str

    @property
    def n_experts(self) -> int:
        return int(self.usage.shape[1])


@dataclass(frozen=True)
class RoutingWeights:
    """Per-level routing of a set of trials, from ``MoEEncoder.routing_weights``."""

    subject: str
    levels: list[LevelRouting]

    @property
    def n_experts(self) -> list[int]:
        return [lv.n_experts for lv in self.levels]


# --------------------------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------------------------


class MoEEncoder(BrainEncoder):
    """MoRE-Brain Mixture-of-Experts encoder; see the module docstring and ``MoEConfig``.

    ``subject_layers[name]`` is the subject's input layer ``Linear(n_voxels, hidden)``; routers are
    ``levels[i].router``; ``param_groups("router_only", subject=new)`` trains the new subject's input layer and
    every router while experts, heads and the projector stay frozen (MoRE-Brain's ``--train_router_only``).
    """

    config_class = MoEConfig
    kind = "moe"

    def __init__(self, config: MoEConfig, *, n_voxels, target_shape) -> None:
        super().__init__(config, n_voxels=n_voxels, target_shape=target_shape)
        c = self.config
        cf = c.capacity_factor
        levels = []
        e0 = c.n_experts[0]
        width0 = c.expert_width or max(1, int(c.hidden // e0 * cf))
        for i, e in enumerate(c.n_experts):
            if c.topology == "hierarchical" and i > 0:
                prev = levels[-1]
                children = e // c.n_experts[i - 1]
                width = max(1, int(prev.width // children * cf))
                levels.append(ExpertLevel(prev.n_experts, prev.width, children, width, None, self.embed_dim, c))
            else:
                width = width0 if i == 0 else max(1, int(c.hidden // e * cf))
                levels.append(ExpertLevel(1, c.hidden, e, width, c.n_blocks, self.embed_dim, c))
        self.levels = nn.ModuleList(levels)
        if c.roi_groups and c.roi_group_prior > 0 and c.router_unit_bias:
            self._init_roi_group_prior()
        d = self.target_shape[-1]
        self.projector = RetrievalProjector(d, c.projector_hidden or d) if c.retrieval else None
        self._init_subjects()

    def _init_roi_group_prior(self) -> None:
        """Unit biases of input-routing levels: group g's units start preferring expert floor(g·E/G)."""
        c = self.config
        n_groups = len(c.roi_groups)
        unit_group = torch.arange(c.hidden) * n_groups // c.hidden
        for i, level in enumerate(self.levels):
            if c.topology == "hierarchical" and i > 0:
                continue
            e = level.n_children
            with torch.no_grad():
                level.router.unit_bias[0, torch.arange(c.hidden), unit_group * e // n_groups] += c.roi_group_prior

    def _build_subject(self, n_voxels: int) -> nn.Module:
        if self.config.roi_groups:
            return RoiGroupedLinear(n_voxels, self.config.hidden, len(self.config.roi_groups))
        return nn.Linear(n_voxels, self.config.hidden)

    def set_voxel_groups(self, subject: str | None, roi_masks: dict[str, np.ndarray]) -> np.ndarray | None:
        """Assign the subject's voxels to ``roi_groups`` from its ROI masks (name → bool (n_voxels,)).

        Returns the group of every voxel (-1: in no group), or None when the encoder has no ``roi_groups``.
        """
        layer = self.subject_layer(subject)
        if not isinstance(layer, RoiGroupedLinear):
            return None
        n = layer.voxel_group.shape[0]
        groups = np.full(n, -1, np.int64)
        for g, names in enumerate(self.config.roi_groups):
            for r in names:
                if r in roi_masks:
                    m = np.asarray(roi_masks[r], bool)
                    if m.shape != (n,):
                        raise ConfigError(f"ROI '{r}': expected a mask of {n} voxels, found shape {m.shape}")
                    groups[m] = g
        layer.set_voxel_groups(groups)
        return groups

    @property
    def caption_features(self) -> int:
        # The caption head reads the first level's routed expert states, concatenated (batch, experts × width).
        return self.levels[0].n_experts * self.levels[0].width

    def _router_parameters(self) -> dict[str, nn.Parameter]:
        return {f"levels.{i}.router.{k}": p for i, lv in enumerate(self.levels)
                for k, p in lv.router.named_parameters()}

    def _run(self, betas: torch.Tensor, subject: str | None) -> tuple[torch.Tensor, list[dict]]:
        betas, name = self._check_betas(betas, subject)
        units = self.subject_layer(name)(betas)
        results = []
        for i, level in enumerate(self.levels):
            if self.config.topology == "hierarchical" and i > 0:
                x = results[-1]["hidden"]
            else:
                x = units.unsqueeze(1)
            results.append(level(x))
        return units, results

    def forward(self, betas: torch.Tensor, subject: str | None = None) -> EncoderOutput:
        """Encode betas (batch, n_voxels) of one subject.

        Returns ``EncoderOutput`` with ``aux_losses["load_balance"]`` and ``extras["levels"]``
        (n_levels, batch, *target_shape).
        """
        _, results = self._run(betas, subject)
        b = betas.shape[0]
        stack = torch.stack([r["out"] for r in results]).reshape(len(results), b, *self.target_shape)
        emb = stack.mean(dim=0)
        retrieval = self.projector(emb).flatten(1) if self.projector is not None else None
        lb = torch.stack([r["lb"] for r in results]).mean()
        caption = self.caption(results[0]["hidden"].flatten(1)) if self.caption_head is not None else None
        return EncoderOutput(embedding=emb, retrieval=retrieval, aux_losses={"load_balance": lb},
                             extras={"levels": stack}, caption=caption)

    def expert_outputs(self, betas: torch.Tensor, subject: str | None = None) -> list[torch.Tensor]:
        """Each expert's own contribution, per level: (batch, n_experts, *target_shape); differentiable.

        A level's output is the sum over its experts; ``forward``'s embedding is the mean over levels.
        """
        _, results = self._run(betas, subject)
        b = betas.shape[0]
        return [r["expert_out"].reshape(b, r["expert_out"].shape[1], *self.target_shape) for r in results]

    @torch.no_grad()
    def routing_chunk(self, betas: torch.Tensor, subject: str) -> list[torch.Tensor]:
        """Per level, the routing weights ``(batch, n_units, n_experts)`` (float32, on the model's device) of a chunk
        of trials, in eval mode; ``betas`` may live on any device (it is moved to the model's)."""
        ref = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            _, results = self._run(betas.to(ref.device, ref.dtype), subject)
        finally:
            self.train(was_training)
        out = []
        for r in results:
            w = r["weights"].float()
            bsz, p, u, c = w.shape
            if p > 1:  # lay parents end to end, zeros outside each parent's own children
                eye = torch.eye(p, dtype=w.dtype, device=w.device)
                w = (w.unsqueeze(3) * eye[None, :, None, :, None]).reshape(bsz, p * u, p * c)
            else:
                w = w[:, 0]
            out.append(w)
        return out

    @torch.no_grad()
    def routing_weights(self, betas, subject: str | None = None, *, batch_size: int = 256) -> RoutingWeights:
        """Routing of every level for a set of trials, in eval mode (no noise, no dropout).

        Parameters
        ----------
        betas : array or Tensor, shape (n_trials, n_voxels)
        subject : str, optional

        Returns
        -------
        RoutingWeights
            ``levels[i].weights`` (n_trials, n_units, n_experts) and ``levels[i].usage`` (n_trials, n_experts).
        """
        name = self.resolve_subject(subject)
        x_all = betas.detach() if torch.is_tensor(betas) else torch.as_tensor(np.asarray(betas, dtype=np.float32))
        per_level: list[list[np.ndarray]] = [[] for _ in self.levels]
        for s in range(0, x_all.shape[0], batch_size):
            for i, w in enumerate(self.routing_chunk(x_all[s:s + batch_size], name)):
                per_level[i].append(w.cpu().numpy())
        levels = []
        for i, (lv, chunks) in enumerate(zip(self.levels, per_level)):
            w = np.concatenate(chunks, axis=0).astype(np.float32)
            mass = w.sum(axis=1)
            usage = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-12)
            hier = self.config.topology == "hierarchical" and i > 0
            parents = (np.arange(lv.n_experts) // lv.n_children) if hier else np.full(lv.n_experts, -1)
            levels.append(LevelRouting(weights=w, usage=usage.astype(np.float32), parents=parents.astype(np.int64),
                                       source="parent" if hier else "input"))
        return RoutingWeights(subject=name, levels=levels)

"""SparseMask search (Wu et al., 2019): gated connections, sparsity loss and pruning.

A gated :class:`~napari_qpi.nn.prnet.PRNet` (``PRNetConfig(gated=True)``) multiplies every decoder
connection by a scalar gate ``w`` in [0, 2]. The search trains weights and gates with

    loss = phase loss + 0.01 * sparsity_loss(model)

calls :func:`clamp_gates_` after every optimiser step, and finally :func:`prune` turns the gates
into a connectivity: a plain dictionary from decoder stage to the inputs it keeps, e.g.
``{"D0": ["E0", "D2"], "D2": ["E2", "G"]}``. The searched network is then an ungated ``PRNet`` with
that connectivity, retrained from scratch.

Names: ``E<i>`` is encoder endpoint i, ``G`` the global-average-pooled last endpoint and ``D<l>``
decoder stage l. The network's output is read from the lowest-numbered surviving stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ModelError

#: Gates live in [0, MAX_GATE]; the keep probability of a connection is p = w / MAX_GATE.
MAX_GATE = 2.0
#: Standard deviation of the Gaussian noise added to the gates during training.
GATE_NOISE_STD = 0.1
#: Connections whose keep probability falls below this are pruned.
PRUNE_THRESHOLD = 1e-3

GateTable = Mapping[str, Mapping[str, float]]


class Gate(nn.Module):
    """Gates of the connections into one decoder stage, one scalar parameter per input.

    Parameters
    ----------
    stage
        Name of the decoder stage, e.g. ``"D3"``.
    inputs
        Names of its inputs, in the order the stage sums them.

    Attributes
    ----------
    weight
        (len(inputs),) gate parameters, initialised to 1 (keep probability 1/2).
    """

    def __init__(self, stage: str, inputs: Sequence[str]) -> None:
        super().__init__()
        self.stage = stage
        self.inputs = tuple(inputs)
        self.weight = nn.Parameter(torch.ones(len(self.inputs)))

    def forward(self) -> Tensor:
        """(len(inputs),) gate values w in [0, 2]: ``clamp(weight + N(0, 0.1^2), 0, 2)`` in
        training mode, ``clamp(weight, 0, 2)`` in evaluation mode."""
        w = self.weight
        if self.training:
            w = w + GATE_NOISE_STD * torch.randn_like(w)
        return w.clamp(0.0, MAX_GATE)

    def keep_probability(self) -> Tensor:
        """(len(inputs),) noise-free keep probabilities p = clamp(weight, 0, 2) / 2 in [0, 1]."""
        return self.weight.clamp(0.0, MAX_GATE) / MAX_GATE

    def extra_repr(self) -> str:
        return f"stage={self.stage}, inputs={list(self.inputs)}"


def gates(model: nn.Module) -> list[Gate]:
    """The gates of a model, deepest stage first (the order the decoder runs)."""
    return [m for m in model.modules() if isinstance(m, Gate)]


def gate_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The gate parameters, e.g. for an optimiser group without weight decay."""
    return (gate.weight for gate in gates(model))


@torch.no_grad()
def clamp_gates_(model: nn.Module) -> None:
    """Clamp every gate parameter to [0, 2] in place; call after each optimiser step."""
    for gate in gates(model):
        gate.weight.clamp_(0.0, MAX_GATE)


def cross_entropy(p: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """Elementwise Lm(p, q) = -p log q - (1 - p) log(1 - q), with q kept in [eps, 1 - eps]."""
    q = q.clamp(eps, 1.0 - eps)
    return -(p * q.log() + (1.0 - p) * (1.0 - q).log())


def stage_sparsity_loss(p: Tensor) -> Tensor:
    """SparseMask loss of one stage from the keep probabilities p (n,) of its n inputs.

    ``mean(Lm(p, p)) + Lm(a, mean(p))`` with ``a = min(2 / n, 1/2)``: the entropy term drives each
    gate to 0 or 1, the second term drives the stage to keep about two inputs.
    """
    target = p.new_tensor(min(2.0 / p.numel(), 0.5))
    return cross_entropy(p, p).mean() + cross_entropy(target, p.mean())


def sparsity_loss(model: nn.Module) -> Tensor:
    """Sum of :func:`stage_sparsity_loss` over the gated stages of ``model`` (scalar tensor).

    The keep probabilities are the noise-free ``clamp(weight, 0, 2) / 2``, so the loss does not
    depend on the last forward pass (SparseMask's own code uses that pass's noisy gates; the two
    differ by the N(0, 0.1^2) noise only).
    """
    found = gates(model)
    if not found:
        raise ModelError("the sparsity loss needs a gated network, e.g. PRNetConfig(gated=True)")
    return torch.stack([stage_sparsity_loss(g.keep_probability()) for g in found]).sum()


def gate_table(model: nn.Module) -> dict[str, dict[str, float]]:
    """Keep probability p of every connection: ``{stage: {input: p}}``, shallowest stage first."""
    table = {
        g.stage: dict(zip(g.inputs, g.keep_probability().tolist(), strict=True))
        for g in gates(model)
    }
    return dict(sorted(table.items(), key=lambda item: _stage_index(item[0])))


def prune(
    source: nn.Module | GateTable,
    threshold: float = PRUNE_THRESHOLD,
    max_inputs: int | None = None,
) -> dict[str, list[str]]:
    """Connectivity kept by the gates of a searched model.

    Parameters
    ----------
    source
        A gated model, or a table ``{stage: {input: p}}`` of keep probabilities as returned by
        :func:`gate_table`.
    threshold
        Connections with p < threshold are dropped.
    max_inputs
        Keep at most this many inputs per stage, those of highest p (ties: the earlier input).
        SparseMask's loss asks each stage for about two inputs, but a search that ends before its
        gates reach 0 or 1 leaves many between, and the threshold alone keeps them all.

    Returns
    -------
    dict
        ``{stage: [inputs]}`` after :func:`drop_dangling`.
    """
    table = gate_table(source) if isinstance(source, nn.Module) else source
    if not table:
        raise ModelError("nothing to prune: the model has no gates")
    if max_inputs is not None and max_inputs < 1:
        raise ModelError(f"max_inputs must be at least 1, got {max_inputs}")
    kept = {}
    for stage, probs in table.items():
        names = [name for name, p in probs.items() if p >= threshold]
        if max_inputs is not None and len(names) > max_inputs:
            strongest = set(sorted(names, key=lambda name: -probs[name])[:max_inputs])
            names = [name for name in names if name in strongest]
        kept[stage] = names
    connectivity = drop_dangling(kept)
    if not connectivity:
        raise ModelError(
            f"every connection has a keep probability below {threshold}: lower the threshold or "
            "the sparsity weight of the search"
        )
    return connectivity


def drop_dangling(connectivity: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Remove decoder stages that cannot contribute to the output, to a fixed point.

    The output stage is the lowest-numbered stage with inputs. Repeatedly: stages with no inputs
    are dropped, connections from dropped stages are dropped, and stages whose output no
    remaining stage reads (other than the output stage) are dropped.

    Parameters
    ----------
    connectivity
        ``{"D<l>": [input names]}``; inputs named ``D<i>`` are outputs of other stages.

    Returns
    -------
    dict
        The surviving stages with their surviving inputs (orders kept); empty if none survives.
    """
    graph = {stage: list(inputs) for stage, inputs in connectivity.items()}
    while True:
        alive = {stage for stage, inputs in graph.items() if inputs}
        if not alive:
            return {}
        output = min(alive, key=_stage_index)
        read = {name for stage in alive for name in graph[stage]}
        pruned = {
            stage: [name for name in graph[stage] if not name.startswith("D") or name in alive]
            for stage in sorted(alive, key=_stage_index)
            if stage == output or stage in read
        }
        if pruned == graph:
            return pruned
        graph = pruned


def _stage_index(stage: str) -> int:
    return int(stage.removeprefix("D"))

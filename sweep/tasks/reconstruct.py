"""Mask-fixed layer-wise reconstruction (`obs_reconstruct`) and the layer statistics it shares
with `adaprune`.

For each prunable layer (Conv2d through its unfolded inputs, Linear) in forward order, one paired
pass runs the dense model and the pruned model (its earlier layers already refitted), each stopped
at that layer, on every calibration batch, and folds in float64

    H = sum X X^T   (d x d; X: the pruned layer's inputs, one column per output position),
    C = sum X T^T   (d x out; T: the dense layer's outputs minus this layer's bias),
    sum |T|^2,

so the squared error |W X - T|^2 of any weight W is tr(W H W^T) - 2 tr(W C) + sum |T|^2 without
ever holding the unfolded inputs of the whole set. `obs_reconstruct` then solves, per output row
i with kept inputs S_i (the pruning step's mask, else the row's non-zero weights; held fixed) and
masked weights w0_i (the layer's kept weights: their dense values),

    min over w of |w X[S_i] - T_i|^2 + lam |w - w0_i[S_i]|^2,   lam = damping * mean(diag H),
    w_i[S_i] = (H[S_i, S_i] + lam I)^-1 (C[S_i, i] + lam w0_i[S_i]),

the Optimal Brain Compression / SparseGPT update with the mask given: damping H itself pulls the
kept weights towards their dense values, not towards zero as a ridge would, so since w0_i is a
candidate a row never ends with more output error than plain masking (at any damping; 0 is plain
least squares). It is solved as the step w_i = w0_i + (H[S_i, S_i] + lam I)^-1 g_i from the
masked weights along g = C - H w0 (minus half the gradient), which keeps that guarantee where H is
singular (damping 0: the least-squares step of least norm). Weights outside S_i stay exactly zero.
Rows sharing one mask (a layer the allocation left dense) share one factorisation. BatchNorm is
recalibrated afterwards (`recal_after`, see `LayerwiseParams`).

Cost: one dense pass that keeps every layer's output when they fit in DENSE_TARGET_BYTES, then one
pass of the pruned prefix per prunable layer (each stops at its layer, so about half a pass on
average; counted as one calibration pass each), plus the recalibration pass. Beyond the budget
the dense prefix runs again beside each pruned one.

Memory: the largest layer's H, C and g, plus one batch's unfolded inputs; the per-row solves run
in chunks no larger than H and C together. With d = C_in * k * k, the peak H is (`peak_gram_floats`)
ResNet-50 at 224 px: the layer4 3x3 convs, d = 512 * 9 = 4608, 4608^2 = 21.2 M floats (170 MB in
float64); DenseNet-121 at 224 px: the dense layers' 3x3 convs, d = 128 * 9 = 1152, 1152^2 = 1.33 M
floats (10.6 MB). The input size does not change H, only the batch's unfolded inputs (ResNet-50
stem at 224 px: 147 x 12544 floats per image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweep.catalog.repair_parameters import ObsParams
from sweep.core.errors import UserError
from sweep.tasks.bn_recal import bn_recalibrate
from sweep.tasks.dense_stats import model_device
from sweep.tasks.repair_passes import forward_pass

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass
class LayerStats:
    """Sufficient statistics of one layer's least-squares fit, float64 on the model's device."""

    gram: torch.Tensor  # [d, d]: sum X X^T of the pruned layer's inputs
    cross: torch.Tensor  # [d, out]: sum X T^T against the dense layer's outputs
    target_sq: torch.Tensor  # scalar: sum |T|^2
    count: int  # output positions (rows of X^T) seen

    def squared_error_and_gradient(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """|W X - T|^2 summed over the calibration set, and its gradient, for W [out, d]."""
        product = weight @ self.gram
        error = (product * weight).sum() - 2 * (weight * self.cross.T).sum() + self.target_sq
        return error, 2 * (product - self.cross.T)

    def relative_error(self, weight: torch.Tensor) -> float:
        """|W X - T|^2 / |T|^2: 0 reproduces the dense layer's outputs exactly."""
        return float(self.squared_error_and_gradient(weight.double())[0] / self.target_sq)


def flat_weight(layer: nn.Module) -> torch.Tensor:
    """The weight as [out, d], d in the order of `F.unfold` (channel, kernel row, kernel col)."""
    return layer.weight.reshape(layer.weight.shape[0], -1)


def _check_layer(name: str, layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d) and (
        layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros"
    ):
        raise UserError(
            f"layer-wise repair supports Conv2d with groups=1 and integer zero padding; "
            f"layer {name!r} has groups={layer.groups}, padding={layer.padding!r}, "
            f"padding_mode={layer.padding_mode!r}"
        )


def _inputs(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[positions, d]: one row per output position the layer computes."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _targets(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """[positions, out], bias removed: the part of the output the weights must produce."""
    if isinstance(layer, nn.Conv2d):
        rows = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    else:
        rows = y.reshape(-1, y.shape[-1])
    return rows if layer.bias is None else rows - layer.bias.detach()


class _Stop(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the forward is skipped."""


def _run_until(model: nn.Module, name: str, batch: torch.Tensor, want_output: bool) -> torch.Tensor:
    """The input (or output) of layer `name` on `batch`, running `model` only that far."""
    seen: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen.append(output if want_output else inputs[0])
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(capture)
    try:
        model(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise UserError(f"layer {name!r} is not used by {type(model).__name__}'s forward")
    return seen[0]


# Dense layer outputs of a whole calibration set kept in memory at most this large: then one dense
# pass serves every layer (ResNet-20 at 256 Fashion-MNIST images: 150 MB); beyond it (ImageNet
# sizes) each layer's pass runs the dense prefix again, and memory stays one layer's statistics.
DENSE_TARGET_BYTES = 1 << 30


def dense_targets(
    dense: nn.Module, names: Sequence[str], batches: Sequence[torch.Tensor]
) -> dict[str, list[torch.Tensor]] | None:
    """Each named layer's dense output on every batch, from one forward pass, or None once they
    would exceed DENSE_TARGET_BYTES (the pass stops there; past the budget, a model's first few
    images already fill it). The values are those a pass stopped at the layer gives."""
    device = model_device(dense)
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    kept = 0

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            nonlocal kept
            kept += output.numel() * output.element_size()
            if kept > DENSE_TARGET_BYTES:
                raise _Stop
            outputs[name].append(output.detach().clone())  # clone: later in-place ops

        return hook

    handles = [dense.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            forward_pass(dense, [batch.to(device) for batch in batches])
    except _Stop:
        return None
    finally:
        for handle in handles:
            handle.remove()
    return outputs


class _PairedPrefix(nn.Module):
    """One calibration batch through both prefixes, folded into the layer's `LayerStats`."""

    def __init__(
        self,
        dense: nn.Module,
        pruned: nn.Module,
        name: str,
        targets: Sequence[torch.Tensor] | None,
    ) -> None:
        super().__init__()
        self.models = (dense, pruned)  # a tuple: not registered as submodules
        self.name = name
        self.layer = pruned.get_submodule(name)
        self.targets = iter(targets) if targets is not None else None
        self.stats: LayerStats | None = None

    def forward(self, batch: torch.Tensor) -> None:
        dense, pruned = self.models
        if self.targets is not None:
            target = next(self.targets)
        else:
            target = _run_until(dense, self.name, batch.to(model_device(dense)), want_output=True)
        inputs = _run_until(pruned, self.name, batch, want_output=False)
        x = _inputs(self.layer, inputs).double()
        t = _targets(self.layer, target.to(x.device)).double()
        if self.stats is None:
            d, out = x.shape[1], t.shape[1]
            zeros = x.new_zeros
            self.stats = LayerStats(zeros(d, d), zeros(d, out), zeros(()), 0)
        self.stats.gram += x.T @ x
        self.stats.cross += x.T @ t
        self.stats.target_sq += (t * t).sum()
        self.stats.count += len(x)


def layer_statistics(
    dense: nn.Module,
    pruned: nn.Module,
    name: str,
    batches: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor] | None = None,
) -> LayerStats:
    """The statistics of layer `name`: pruned prefix inputs against dense outputs (one pass);
    `targets`: the dense layer's output per batch (`dense_targets`), else computed here."""
    _check_layer(name, pruned.get_submodule(name))
    paired = _PairedPrefix(dense, pruned, name, targets)
    with torch.no_grad():
        forward_pass(paired, batches)
    assert paired.stats is not None
    return paired.stats


def prunable_in_forward_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the Conv2d/Linear layers in the order a forward of `example` first calls them."""
    order: list[str] = []
    handles = [
        module.register_forward_pre_hook(lambda m, i, n=name: order.append(n))
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


Fit = Callable[[str, torch.Tensor, torch.Tensor, LayerStats], torch.Tensor]


Masks = dict[str, torch.Tensor]


def refit_layers(
    model: nn.Module,
    dense: nn.Module,
    batches: Sequence[torch.Tensor],
    fit: Fit,
    masks: Masks | None = None,
) -> None:
    """Refit every prunable layer of `model` in forward order, its mask held fixed.

    `masks`: the pruning step's bool keep-masks (weight shapes, keyed by module name as
    `sweep.tasks.prune` keys them); None takes each layer's non-zero weights, which also fixes at
    zero a kept weight that happens to be exactly zero. `fit(name, weight, mask, stats)` gets the
    float64 weight [out, d], its mask and the layer's statistics (measured after all earlier
    layers were refitted) and returns the new weight; entries outside the mask are written as
    exact zeros whatever it returns.
    """
    was_training = dense.training
    dense.eval()
    model.eval()
    try:
        names = prunable_in_forward_order(model, batches[0][:1])
        targets = dense_targets(dense, names, batches)
        for name in names:
            layer = model.get_submodule(name)
            own = targets.pop(name) if targets is not None else None  # freed once used
            stats = layer_statistics(dense, model, name, batches, own)
            weight = flat_weight(layer).detach().double()
            mask = (
                weight != 0
                if masks is None
                else masks[name].to(weight.device).reshape(weight.shape)
            )
            new = fit(name, weight, mask, stats)
            with torch.no_grad():
                layer.weight.copy_(torch.where(mask, new, 0.0).reshape(layer.weight.shape))
    finally:
        dense.train(was_training)


def masked_least_squares(
    stats: LayerStats, weight: torch.Tensor, mask: torch.Tensor, damping: float
) -> torch.Tensor:
    """Per row, the damped least-squares weights on the row's mask (others zero), held to the
    masked `weight` with lam = damping * mean(diag H) (the OBC/SparseGPT update).

    Solved as a step from the masked weights (see the module docstring), so no row's output error
    exceeds the masked weights' even where H[S, S] is singular. Rows are grouped by identical
    mask (one factorisation per group) and groups solved in padded batches whose [k, k] systems
    together stay within the size of H and C.
    """
    start_weight = torch.where(mask, weight, 0.0)
    scale = stats.gram.diagonal().mean()
    if not scale > 0:  # the layer's inputs are all zero: every weight gives the same output
        return start_weight
    lam = damping * scale
    d, out = stats.cross.shape
    pull = stats.cross - stats.gram @ start_weight.T  # [d, out]: minus half the gradient
    masks, group_of_row, counts = torch.unique(mask, dim=0, return_inverse=True, return_counts=True)
    rows_of = list(torch.argsort(group_of_row, stable=True).split(counts.tolist()))
    sizes = masks.sum(1)
    groups = [int(g) for g in torch.argsort(sizes, descending=True) if sizes[g] > 0]
    step = torch.zeros_like(weight)
    budget = d * d + d * out
    first = 0
    while first < len(groups):
        k = int(sizes[groups[first]])
        chunk, widest = [], 0
        for g in groups[first:]:
            width = max(widest, len(rows_of[g]))
            if chunk and (len(chunk) + 1) * (k * k + k * width) > budget:
                break
            chunk.append(g)
            widest = width
        _solve_chunk(stats.gram, pull, masks, rows_of, chunk, k, widest, lam, step)
        first += len(chunk)
    return start_weight + step


def _solve_chunk(
    gram: torch.Tensor,
    pull: torch.Tensor,
    masks: torch.Tensor,
    rows_of: list[torch.Tensor],
    chunk: list[int],
    k: int,
    width: int,
    lam: torch.Tensor,
    step: torch.Tensor,
) -> None:
    """Solve (H[S, S] + lam I) step = pull[S] for `chunk` (groups with at most k kept inputs) in
    one batch: Cholesky when damped, else the pseudo-inverse (H[S, S] may be singular)."""
    device = gram.device
    group = torch.tensor(chunk, device=masks.device)
    chosen = masks[group]
    # Kept input indices first (ascending), then filler indices masked out by `valid`.
    index = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :k].to(device)
    valid = (torch.arange(k, device=device) < chosen.sum(1, keepdim=True).to(device)).double()
    systems = gram[index[:, :, None], index[:, None, :]] * valid[:, :, None] * valid[:, None]
    systems += torch.diag_embed(valid * lam + (1 - valid))
    rows = torch.full((len(chunk), width), -1, dtype=torch.long, device=device)
    for slot, g in enumerate(chunk):
        rows[slot, : len(rows_of[g])] = rows_of[g].to(device)
    has_row = (rows >= 0).double()
    rhs = pull[index[:, :, None], rows.clamp(min=0)[:, None, :]]
    rhs = rhs * valid[:, :, None] * has_row[:, None, :]
    if lam > 0:
        solution = torch.cholesky_solve(rhs, torch.linalg.cholesky(systems))
    else:  # the least-norm step: zero along directions the inputs never span
        solution = torch.linalg.pinv(systems, hermitian=True) @ rhs  # [chunk, k, width]
    for slot, g in enumerate(chunk):
        kept = int(chosen[slot].sum())
        row_ids = rows_of[g].to(device)
        cols = index[slot, :kept]
        step[row_ids[:, None], cols[None, :]] = solution[slot, :kept, : len(row_ids)].T


def obs_reconstruct(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    dense: nn.Module,
    params: ObsParams,
    masks: Masks | None = None,
) -> None:
    """Layer by layer in forward order, refits each Conv2d/Linear's kept weights (mask fixed:
    `masks` from the pruning step, else the non-zero weights) by least squares held to their
    dense values (OBC/SparseGPT update with the mask given, `damping`) so its output on the
    pruned prefix's inputs matches the dense layer's output on the same calibration images, never
    further than masking left it; then recalibrates BatchNorm (recal_after)."""

    def fit(name: str, weight, mask, stats: LayerStats) -> torch.Tensor:
        return masked_least_squares(stats, weight, mask, params.damping)

    refit_layers(model, dense, batches, fit, masks)
    if params.recal_after:
        bn_recalibrate(model, batches)


def peak_gram_floats(model: nn.Module) -> int:
    """Floats in the largest layer's Gram matrix, (C_in * k * k)^2: the method's memory bound."""
    return max(flat_weight(m).shape[1] ** 2 for m in model.modules() if isinstance(m, PRUNABLE))

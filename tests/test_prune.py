"""Allocations and masks: hand-computed answers, properties over random models, torch's pruning."""

from __future__ import annotations

import copy
import io
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.archs import ARCH_NAMES, ARCHS
from sweep.core.errors import UnknownNameError, UserError
from sweep.tasks import ranking
from sweep.tasks.allocations import erk_raw_score
from sweep.tasks.models import build_model
from sweep.tasks.prune import (
    allocate,
    apply_masks,
    compute_masks,
    prunable_layers,
    prune,
)


def toy(
    a: list[float] | None = None, b: list[float] | None = None, fc: list[float] | None = None
) -> nn.Module:
    """Three layers: conv a (2,1,2,2) raw 7/8, conv b (4,2,1,1) raw 1, fc (6,4) raw 10/24; N=40."""
    model = nn.Sequential()
    model.add_module("a", nn.Conv2d(1, 2, 2))
    model.add_module("b", nn.Conv2d(2, 4, 1))
    model.add_module("fc", nn.Linear(4, 6))
    with torch.no_grad():
        for name, values in (("a", a), ("b", b), ("fc", fc)):
            if values is not None:
                weight = getattr(model, name).weight
                weight.copy_(torch.tensor(values).reshape(weight.shape))
    return model


def scattered(magnitudes: list[float], seed: int) -> list[float]:
    """The magnitudes in a shuffled order with alternating signs."""
    values = [m * (-1) ** i for i, m in enumerate(magnitudes)]
    random.Random(seed).shuffle(values)
    return values


def lamp_toy() -> nn.Module:
    return toy(
        a=scattered([1, 2, 3, 4, 5, 6, 7, 8], 1),
        b=scattered([1, 1, 1, 1, 1, 1, 1, 10], 2),
        fc=scattered(list(range(1, 25)), 3),
    )


# ----------------------------------------------------------------------------- known answers


@pytest.mark.parametrize(
    ("sparsity", "expected", "forced"),
    [
        # K = 20, eps = 20 / (7 + 8 + 10) = 0.8: quotas 5.6, 6.4, 8 -> floors 19, +1 to a (.6)
        (0.5, {"a": 6, "b": 6, "fc": 8}, []),
        # K = 8, eps = 0.32: quotas 2.24, 2.56, 3.2 -> floors 7, +1 to b (.56)
        (0.8, {"a": 2, "b": 3, "fc": 3}, []),
        # K = 30, eps = 1.2 makes b (raw 1) dense; then eps = 22/17, a's density 1.13 > 1: dense;
        # then eps = 14/10 = 1.4 and fc keeps 14 (density 7/12)
        (0.25, {"a": 8, "b": 8, "fc": 14}, ["a", "b"]),
    ],
)
def test_erk_known_answers(sparsity, expected, forced):
    model = toy()
    assert [erk_raw_score(m.weight.shape) for _, m in prunable_layers(model)] == [7 / 8, 1, 10 / 24]
    assert allocate(model, "erk", sparsity) == expected
    report = prune(model, "erk", sparsity)
    assert report.forced_dense == forced
    assert {layer.name: layer.kept for layer in report.layers} == expected


def test_erk_layers_tied_at_the_top_go_dense_together():
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(2, 4, 1), nn.Linear(4, 6))  # raw 1, 1
    # K = 28, eps = 28 / 26 > 1 for both raw-1 layers at once; fc keeps the other 12
    report = prune(model, "erk", 0.3)
    assert report.forced_dense == ["0", "1"]
    assert [layer.kept for layer in report.layers] == [8, 8, 12]


def test_lamp_known_answer_scores():
    # layer a, magnitudes 1..8 ascending: squares 1 4 9 16 25 36 49 64, suffix sums
    # 204 203 199 190 174 149 113 64, so the scores are:
    hand = [
        Fraction(1, 204),
        Fraction(4, 203),
        Fraction(9, 199),
        Fraction(16, 190),
        Fraction(25, 174),
        Fraction(36, 149),
        Fraction(49, 113),
        Fraction(1),
    ]
    scores = ranking.top_lamp_scores(lamp_toy().a.weight, 8)
    assert scores.tolist() == pytest.approx([float(f) for f in hand], rel=1e-15)
    assert ranking.top_lamp_scores(lamp_toy().a.weight, 3).tolist() == scores[-3:].tolist()


@pytest.mark.parametrize(
    ("sparsity", "expected"),
    [
        # K = 4: the three 1s, then fc's 23^2/(23^2+24^2) = 529/1105 = .479 beats a's 49/113 = .434
        (0.9, {"a": 1, "b": 1, "fc": 2}),
        # K = 8: after the 1s: fc .479, a .434, fc 484/1589 = .305, a 36/149 = .242,
        # fc 441/2030 = .217; b's second score 1/101 = .0099 never makes it
        (0.8, {"a": 3, "b": 1, "fc": 4}),
        # K = 2 < 3 layers: the score-1 ties go to the earlier layers, fc is emptied
        (0.95, {"a": 1, "b": 1, "fc": 0}),
    ],
)
def test_lamp_known_answers(sparsity, expected):
    model = lamp_toy()
    assert allocate(model, "lamp", sparsity) == expected
    prune(model, "lamp", sparsity)
    kept = {
        name: sorted(m.weight[m.weight != 0].abs().tolist()) for name, m in model.named_children()
    }
    assert kept == {
        "a": [8 - i for i in range(expected["a"])][::-1],
        "b": [10.0] * expected["b"],
        "fc": [24 - i for i in range(expected["fc"])][::-1],
    }


def test_global_and_uniform_known_answers():
    model = lamp_toy()
    # K = 8 largest |w| overall: fc's 24..17 (b's 10 is only 15th)
    assert allocate(model, "global", 0.8) == {"a": 0, "b": 0, "fc": 8}
    # quotas 0.2 * (8, 8, 24) = 1.6, 1.6, 4.8: floors 6, two units to fc (.8) and a (.6 ties b,
    # earlier layer first)
    assert allocate(model, "uniform", 0.8) == {"a": 2, "b": 1, "fc": 5}


def uniform_plus_toy() -> nn.Module:
    """conv 3->4 3x3 (108 weights), conv 4->8 3x3 (288), linear 8->10 (80); N = 476."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 3), nn.Linear(8, 10))


@pytest.mark.parametrize(
    ("sparsity", "expected"),
    [
        # K = round(238.0) = 238; the conv stays dense (108), 130 left for 288 + 80 = 368 at one
        # density: quotas 130 * 288 / 368 = 101.74 and 130 * 80 / 368 = 28.26 >= 16 = ceil(80 / 5)
        # -> floors 129, the missing unit to the larger remainder (.74)
        (0.5, [108, 102, 28]),
        # K = round(190.4) = 190: 82 left, quotas 64.17 and 17.83 (>= 16): floors 81, +1 to fc
        (0.6, [108, 64, 18]),
        # K = round(142.8) = 143: 35 left; fc's quota 35 * 80 / 368 = 7.6 < 16 (90.5 % sparse), so
        # it is capped at 80 % sparsity (16) and the middle conv takes the remaining 19
        (0.7, [108, 19, 16]),
        # K = round(123.76) = 124 = 108 + 16: the last sparsity that can be allocated
        (0.74, [108, 0, 16]),
        (0.0, [108, 288, 80]),
    ],
)
def test_uniform_plus_known_answers(sparsity, expected):
    model = uniform_plus_toy()
    assert list(allocate(model, "uniform_plus", sparsity).values()) == expected
    report = prune(model, "uniform_plus", sparsity)
    assert [layer.kept for layer in report.layers] == expected
    assert [int(mask.sum()) for mask in report.masks.values()] == expected


def test_uniform_plus_refuses_a_sparsity_it_cannot_allocate():
    # K = round(47.6) = 48 < 108 (the dense conv) + 16 (the classifier at 20 %)
    model = uniform_plus_toy()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(UserError) as caught:
        prune(model, "uniform_plus", 0.9)
    assert str(caught.value) == (
        "sparsity 0.9 is not allowed for uniform_plus on this model: it keeps 48 weights, but the "
        "dense first conv (108) and the classifier at 20 % density (16) need 124; expected a "
        "lower sparsity"
    )
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def uniform_plus_feasible(model: nn.Module, sparsity: float) -> bool:
    """Whether K covers the dense first conv and ceil(n / 5) of the last layer (the definition)."""
    layers = [m.weight for _, m in prunable_layers(model)]
    total = round((1 - sparsity) * sum(w.numel() for w in layers))
    dense = layers[0].numel() if layers[0].dim() == 4 else 0
    floor = math.ceil(layers[-1].numel() / 5) if len(layers) > 1 or not dense else 0
    return total >= dense + floor


def check_uniform_plus(numels: list[int], counts: list[int], sparsity: float, conv_first: bool):
    """The definition, checked on counts: exact total, dense first conv, classifier at most 80 %
    sparse and capped only when its shared quota falls below that, one shared density elsewhere."""
    assert sum(counts) == round((1 - sparsity) * sum(numels))
    first = 0 if conv_first else None
    if first is not None:
        assert counts[0] == numels[0]
    last = len(numels) - 1 if len(numels) - 1 != first else None
    middle = [i for i in range(len(numels)) if i not in (first, last)]
    shared = middle
    if last is not None:
        floor = math.ceil(numels[last] / 5)
        assert counts[last] >= floor
        quota = Fraction(sum(counts[i] for i in [*middle, last]) * numels[last])
        quota /= sum(numels[i] for i in [*middle, last])
        capped = quota < floor
        assert (counts[last] == floor) if capped else abs(counts[last] - quota) < 1
        shared = middle if capped else [*middle, last]
    budget, pool = sum(counts[i] for i in shared), sum(numels[i] for i in shared)
    for i in shared:
        assert abs(counts[i] - Fraction(budget * numels[i], pool)) < 1


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_uniform_plus_on_every_zoo_model(arch):
    """Exact totals and the definition on every architecture at 32 px, where the first prunable
    layer is the catalog's stem conv and the last its classifier."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, image_size=32)
    info = ARCHS[arch]
    layers = prunable_layers(model)
    assert (layers[0][0], layers[-1][0]) == (info.stem_conv, info.classifier_for(32))
    numels = [m.weight.numel() for _, m in layers]
    capped = []
    for sparsity in (0.5, 0.9, 0.955, 0.98):
        counts = list(allocate(model, "uniform_plus", sparsity).values())
        check_uniform_plus(numels, counts, sparsity, conv_first=True)
        capped.append(counts[-1] == math.ceil(numels[-1] / 5))
    assert capped[0] is False and capped[-1] is True  # both branches on every model


def test_uniform_plus_depends_on_shapes_only_and_is_deterministic():
    torch.manual_seed(1)
    model = build_model("resnet20", 10)
    torch.manual_seed(2)
    other = build_model("resnet20", 10)
    counts = allocate(model, "uniform_plus", 0.95)
    assert allocate(other, "uniform_plus", 0.95) == counts
    first, again = (compute_masks(model, "uniform_plus", 0.95) for _ in range(2))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert {name: int(mask.sum()) for name, mask in first.items()} == counts


def test_masks_break_ties_by_lower_flat_index():
    layer = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, -3.0, 1.0, 3.0, 0.0, -1.0]]))
    assert ranking.keep_largest(layer.weight, 2).tolist() == [
        [True, True, False, False, False, False]
    ]
    assert ranking.keep_largest(layer.weight, 4).tolist() == [
        [True, True, True, True, False, False]
    ]


def test_global_ties_go_to_the_earlier_layer():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        for module in model:
            module.weight.fill_(0.5)
    assert allocate(model, "global", 0.75) == {"0": 2, "1": 0}


def test_erk_on_cifar_resnet18_at_90_percent():
    report = prune(build_model("resnet18", 10, 3, 32), "erk", 0.9)
    dense = ["conv1", "layer2.0.downsample.0", "layer3.0.downsample.0", "fc"]
    assert report.forced_dense == dense
    assert [layer.name for layer in report.layers if layer.density == 1.0] == dense
    numel = sum(layer.numel for layer in report.layers)
    assert sum(layer.kept for layer in report.layers) == round(0.1 * numel)


# ----------------------------------------------------------------------------- properties


def random_model(rng: random.Random) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.6:
            kernel = rng.choice([1, 3, 5])
            layers.append(nn.Conv2d(rng.randint(1, 12), rng.randint(1, 12), kernel))
        else:
            layers.append(nn.Linear(rng.randint(1, 40), rng.randint(1, 40)))
        layers.append(nn.BatchNorm1d(3))  # never prunable
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        for _, module in prunable_layers(model):
            values = torch.randn(module.weight.shape, generator=generator) * rng.uniform(0.01, 3)
            if rng.random() < 0.3:  # coarse values: many exact ties
                values = values.mul(2).round().div(2)
            module.weight.copy_(values)
    return model


def reference_order(weights: list[np.ndarray], scores: list[np.ndarray]) -> list[int]:
    """Brute-force global top-K order: (score desc, layer asc, |w|-rank desc) via one lexsort."""
    layer = np.concatenate([np.full(s.size, i) for i, s in enumerate(scores)])
    position = np.concatenate([np.arange(s.size) for s in scores])
    return np.lexsort((-position, layer, -np.concatenate(scores)))


def reference_lamp_scores(weight: np.ndarray) -> np.ndarray:
    """Scores in ascending |w| order straight from the definition (full sort, sequential sums)."""
    squares = np.sort(np.abs(weight)).astype(np.float64) ** 2
    suffix = np.cumsum(squares[::-1])[::-1]
    return np.divide(squares, suffix, out=np.zeros_like(squares), where=suffix > 0)


def reference_counts(model: nn.Module, allocation: str, k: int) -> list[int]:
    weights = [m.weight.detach().numpy().ravel() for _, m in prunable_layers(model)]
    if allocation == "lamp":
        scores = [reference_lamp_scores(w) for w in weights]
    else:
        scores = [np.sort(np.abs(w)) for w in weights]
    chosen = reference_order(weights, scores)[:k]
    owner = np.concatenate([np.full(s.size, i) for i, s in enumerate(scores)])
    return np.bincount(owner[chosen], minlength=len(weights)).tolist()


def reference_mask(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Stable descending sort on |w| (ties: lower flat index first), keep the first k."""
    magnitude = weight.detach().abs().reshape(-1).numpy()
    order = np.lexsort((np.arange(magnitude.size), -magnitude))
    keep = np.zeros(magnitude.size, dtype=bool)
    keep[order[:k]] = True
    return torch.from_numpy(keep).reshape(weight.shape)


CASES = list(range(50))


def case(seed: int) -> tuple[nn.Module, float]:
    rng = random.Random(seed)
    sparsity = rng.choice([0.0, 0.5, 0.9, 0.955, 0.99, rng.random(), rng.uniform(0.85, 0.999)])
    return random_model(rng), sparsity


@pytest.mark.parametrize("seed", CASES)
def test_allocation_properties(seed):
    model, sparsity = case(seed)
    layers = prunable_layers(model)
    numel = [m.weight.numel() for _, m in layers]
    total = round((1 - sparsity) * sum(numel))
    for allocation in ALLOCATIONS:
        if allocation == "uniform_plus" and not uniform_plus_feasible(model, sparsity):
            with pytest.raises(UserError, match="not allowed for uniform_plus"):
                allocate(model, allocation, sparsity)
            continue
        counts = list(allocate(model, allocation, sparsity).values())
        assert sum(counts) == total, allocation
        assert all(0 <= c <= n for c, n in zip(counts, numel, strict=True)), allocation
        masks = compute_masks(model, allocation, sparsity)
        for (name, module), count in zip(layers, counts, strict=True):
            assert torch.equal(masks[name], reference_mask(module.weight, count)), allocation
        if allocation in ("lamp", "global"):
            assert counts == reference_counts(model, allocation, total), allocation
        if allocation == "lamp" and total >= len(layers):
            assert all(c >= 1 for c in counts)
        if allocation == "uniform":
            assert all(abs(c - (1 - sparsity) * n) < 1 for c, n in zip(counts, numel, strict=True))
        if allocation == "uniform_plus":
            check_uniform_plus(numel, counts, sparsity, layers[0][1].weight.dim() == 4)


@pytest.mark.parametrize("seed", CASES)
def test_erk_densities_follow_the_raw_scores(seed):
    model, sparsity = case(seed)
    report = prune(model, "erk", sparsity)
    raw = {layer.name: erk_raw_score(layer.shape) for layer in report.layers}
    forced = set(report.forced_dense)
    free = [layer for layer in report.layers if layer.name not in forced]
    budget = sum(layer.kept for layer in free)
    weighted = sum(raw[layer.name] * layer.numel for layer in free)
    eps = budget / weighted if weighted else math.inf
    for layer in report.layers:
        if layer.name in forced:  # capped: its density would exceed 1 at the final eps
            assert layer.kept == layer.numel
            assert eps * raw[layer.name] > 1 - 1e-9
        else:  # proportional to the raw score, up to the rounding to an integer count
            assert eps * raw[layer.name] <= 1 + 1e-9
            assert abs(layer.kept - eps * raw[layer.name] * layer.numel) < 1


@pytest.mark.parametrize("seed", CASES[:20])
def test_masks_are_deterministic_across_runs_and_state_dict_round_trips(seed):
    model, sparsity = case(seed)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for _, module in prunable_layers(twin):
            module.weight.normal_()
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    for allocation in ALLOCATIONS:
        if allocation == "uniform_plus" and not uniform_plus_feasible(model, sparsity):
            continue
        first = compute_masks(model, allocation, sparsity)
        for masks in (
            compute_masks(model, allocation, sparsity),
            compute_masks(twin, allocation, sparsity),
        ):
            assert first.keys() == masks.keys()
            assert all(torch.equal(first[name], masks[name]) for name in first)


# ----------------------------------------------------------------------------- torch's pruning


def torch_kept(module: nn.Module) -> int:
    return int(module.weight_mask.sum())


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875, 0.9375])
def test_uniform_matches_l1_unstructured_exactly(sparsity):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 16, 1), nn.Linear(32, 16))
    ours = compute_masks(model, "uniform", sparsity)
    reference = copy.deepcopy(model)
    for _, module in prunable_layers(reference):
        torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    for name, module in prunable_layers(reference):
        assert torch.equal(ours[name], module.weight_mask.bool()), name


@pytest.mark.parametrize("seed", CASES[:15])
def test_uniform_is_within_one_of_l1_unstructured(seed):
    model, sparsity = case(seed)
    counts = allocate(model, "uniform", sparsity)
    for name, module in prunable_layers(copy.deepcopy(model)):
        torch_prune.l1_unstructured(module, "weight", amount=sparsity)
        assert abs(counts[name] - torch_kept(module)) <= 1


@pytest.mark.parametrize("seed", CASES[:15])
def test_global_matches_global_unstructured(seed):
    model, sparsity = case(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # continuous values: no ties, so torch's topk order is unambiguous
        for _, module in prunable_layers(model):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
    ours = compute_masks(model, "global", sparsity)
    reference = copy.deepcopy(model)
    torch_prune.global_unstructured(
        [(m, "weight") for _, m in prunable_layers(reference)],
        pruning_method=torch_prune.L1Unstructured,
        amount=sparsity,
    )
    numel = sum(mask.numel() for mask in ours.values())
    if abs((1 - sparsity) * numel % 1 - 0.5) > 1e-6:  # torch rounds S*N, we round (1-S)*N
        for name, module in prunable_layers(reference):
            assert torch.equal(ours[name], module.weight_mask.bool()), name


# ----------------------------------------------------------------------------- prune / apply


def test_prune_zeroes_exactly_the_masked_weights_and_reports():
    model = lamp_toy()
    before = {name: m.weight.detach().clone() for name, m in prunable_layers(model)}
    report = prune(model, "lamp", 0.8)
    for name, module in prunable_layers(model):
        mask = report.masks[name]
        assert torch.equal(module.weight[mask], before[name][mask])
        assert (module.weight[~mask] == 0).all()
    assert report.achieved_sparsity == pytest.approx(1 - 8 / 40)
    assert report.to_dict() == {
        "allocation": "lamp",
        "requested_sparsity": 0.8,
        "achieved_sparsity": report.achieved_sparsity,
        "layers": [
            {"name": "a", "shape": [2, 1, 2, 2], "numel": 8, "kept": 3, "density": 3 / 8},
            {"name": "b", "shape": [4, 2, 1, 1], "numel": 8, "kept": 1, "density": 1 / 8},
            {"name": "fc", "shape": [6, 4], "numel": 24, "kept": 4, "density": 4 / 24},
        ],
    }


def test_allocate_and_compute_masks_do_not_modify_the_model():
    model = lamp_toy()
    state = copy.deepcopy(model.state_dict())
    allocate(model, "lamp", 0.9)
    compute_masks(model, "global", 0.9)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_sparsity_zero_keeps_everything():
    model = lamp_toy()
    for allocation in ALLOCATIONS:
        assert allocate(model, allocation, 0.0) == {"a": 8, "b": 8, "fc": 24}


def test_cached_masks_apply_to_a_fresh_copy():
    model = lamp_toy()
    masks = compute_masks(model, "erk", 0.5)
    pruned = copy.deepcopy(model)
    apply_masks(pruned, masks)
    assert sum(int((m.weight != 0).sum()) for _, m in prunable_layers(pruned)) == 20


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, math.nan, math.inf, "0.5", True, None])
def test_bad_sparsity(sparsity):
    model = lamp_toy()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(UserError, match=r"sparsity .* expected a number in \[0, 1\)"):
        prune(model, "erk", sparsity)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_unknown_allocation():
    with pytest.raises(
        UnknownNameError,
        match="unknown allocation 'magnitude'; expected one of: erk, lamp, uniform, uniform_plus,",
    ):
        allocate(lamp_toy(), "magnitude", 0.5)


def test_model_without_prunable_layers():
    with pytest.raises(UserError, match="no prunable weights"):
        compute_masks(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), "erk", 0.5)


def test_non_finite_weights():
    model = lamp_toy()
    with torch.no_grad():
        model.b.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(UserError, match="layer 'b' has non-finite weights"):
        prune(model, "lamp", 0.5)


def test_masks_that_do_not_fit():
    model = lamp_toy()
    masks = compute_masks(model, "erk", 0.5)
    with pytest.raises(UserError, match="layer 'extra'"):
        apply_masks(model, {**masks, "extra": masks["a"]})
    with pytest.raises(UserError, match="mask of layer 'a'"):
        apply_masks(model, {**masks, "a": masks["a"].reshape(-1)})

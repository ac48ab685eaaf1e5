"""Networks: MobileNet-v2 endpoints, PRNet connectivity, SparseMask gates and pruning, U-Net."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_qpi.errors import InputError, ModelError
from napari_qpi.nn import (
    MobileNetV2,
    PRNet,
    PRNetConfig,
    UNet,
    UNetConfig,
    allowed_inputs,
    build_network,
    clamp_gates_,
    count_parameters,
    gate_parameters,
    gate_table,
    pad_to_multiple,
    prune,
    sparsity_loss,
)
from napari_qpi.nn.sparsemask import gates

SMALL = {"width": 0.25, "decoder_channels": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small_prnet(**overrides: object) -> PRNet:
    return PRNet(PRNetConfig(**{**SMALL, **overrides}))


def test_mobilenet_endpoints_have_documented_channels_and_strides() -> None:
    encoder = MobileNetV2(width=1.0, in_channels=1)
    channels = (32, 16, 24, 32, 64, 96, 160, 320, 1280)
    strides = (2, 2, 4, 8, 16, 16, 32, 32, 32)
    assert encoder.channels == channels
    assert encoder.strides == strides
    with torch.no_grad():
        endpoints = encoder(torch.zeros(2, 1, 64, 64))
    assert [tuple(e.shape) for e in endpoints] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(channels, strides, strict=True)
    ]


def test_width_multiplier_rounds_to_multiples_of_8_and_keeps_last_layer() -> None:
    assert MobileNetV2(width=0.5).channels == (16, 8, 16, 16, 32, 48, 80, 160, 1280)
    assert MobileNetV2(width=1.4, num_stages=9).channels[-1] == 1792


@pytest.mark.parametrize(
    "network",
    [
        pytest.param(lambda: small_prnet(), id="prnet"),
        pytest.param(lambda: small_prnet(coord_channels=True), id="prnet-coords"),
        pytest.param(lambda: small_prnet(stage_refine=True), id="prnet-refine"),
        pytest.param(lambda: small_prnet(branch_kernel=3), id="prnet-3x3-branches"),
        pytest.param(lambda: UNet(UNetConfig(base_channels=8)), id="unet"),
        pytest.param(
            lambda: UNet(UNetConfig(base_channels=8, upsampling="bilinear")), id="unet-bilinear"
        ),
    ],
)
def test_odd_sizes_padded_to_the_stride_give_the_input_size(network) -> None:
    net = network().eval()
    x = torch.randn(2, 1, 45, 77)
    padded, (height, width) = pad_to_multiple(x, net.stride)
    assert padded.shape[-2] % net.stride == 0 and padded.shape[-1] % net.stride == 0
    with torch.no_grad():
        assert net(padded)[..., :height, :width].shape == (2, 1, 45, 77)
        assert net(x).shape == (2, 1, 45, 77)


def test_supernet_has_every_allowed_connection() -> None:
    net = small_prnet()
    per_stage = {f"D{l}": (9 - l) + (8 - l) + 1 for l in range(9)}  # E_i>=l, D_i>l, G
    assert sum(per_stage.values()) == 90
    assert len(net.connections) == 90
    assert {stage: len(inputs) for stage, inputs in net.connectivity.items()} == per_stage
    assert net.stride == 32 and net.output_stage == "D0"
    assert allowed_inputs("D7") == ["E7", "E8", "D8", "G"]


def test_gates_receive_gradients_and_sparsity_loss_is_differentiable() -> None:
    net = small_prnet(gated=True).train()
    table = gate_table(net)
    assert sum(len(row) for row in table.values()) == 90
    assert all(p == 0.5 for row in table.values() for p in row.values())

    sparsity = sparsity_loss(net)
    assert sparsity.item() == pytest.approx(9 * 2 * math.log(2), rel=1e-5)
    x, target = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64)
    loss = F.l1_loss(net(x), target) + 0.01 * sparsity
    loss.backward()
    for weight in gate_parameters(net):
        assert weight.grad is not None
        assert torch.isfinite(weight.grad).all() and (weight.grad != 0).all()

    with torch.no_grad():
        for gate in gates(net):
            gate.weight.uniform_(-1.0, 3.0)
    (grad,) = torch.autograd.grad(sparsity_loss(net), next(gate_parameters(net)))
    assert torch.isfinite(grad).all()
    clamp_gates_(net)
    assert all(((w >= 0) & (w <= 2)).all() for w in gate_parameters(net))

    gate = gates(net)[0]
    assert not torch.equal(gate(), gate())
    gate.eval()
    assert torch.equal(gate(), gate())
    with pytest.raises(ModelError):
        sparsity_loss(small_prnet())


def test_pruning_hand_set_gates_drops_weak_connections_and_dangling_stages() -> None:
    net = small_prnet(gated=True)
    kept = {
        "D0": {"E0": 1.0, "D2": 1.0, "D3": 1.0},
        "D1": {"E1": 1.0},  # nothing reads D1
        "D2": {"E2": 1.0, "G": 0.002},
        "D3": {"D5": 1.0},  # D5 <- D6, and D6 has no inputs: the chain collapses
        "D4": {"E4": 0.0008},  # below the threshold
        "D5": {"D6": 1.0},
    }
    with torch.no_grad():
        for gate in gates(net):
            probs = kept.get(gate.stage, {})
            gate.weight.copy_(torch.tensor([2 * probs.get(name, 0.0) for name in gate.inputs]))
    assert prune(net) == {"D0": ["E0", "D2"], "D2": ["E2", "G"]}
    assert prune(net, threshold=0.01) == {"D0": ["E0", "D2"], "D2": ["E2"]}

    without_d0 = {"D0": {"E0": 0.0}, "D1": {"E1": 0.9, "E3": 0.0}, "D2": {"E2": 1.0}}
    assert prune(without_d0) == {"D1": ["E1"]}
    with pytest.raises(ModelError):
        prune({"D0": {"E0": 0.0}})


def test_prune_keeps_the_strongest_inputs_of_each_stage_when_asked() -> None:
    # A search that ended before its gates reached 0 or 1: the threshold keeps them all.
    undecided = {
        "D0": {"E0": 0.04, "E3": 0.44, "D1": 0.92, "D2": 0.66, "G": 0.36},
        "D1": {"E3": 0.28, "D2": 0.87, "D3": 0.41},
        "D2": {"E2": 0.54, "E5": 0.53, "D3": 0.50},
        "D3": {"E3": 1.0, "E4": 0.38, "E5": 1.0},
    }
    assert sum(map(len, prune(undecided).values())) == 14
    assert prune(undecided, max_inputs=2) == {
        "D0": ["D1", "D2"],
        "D1": ["D2", "D3"],
        "D2": ["E2", "E5"],
        "D3": ["E3", "E5"],
    }
    # Both rules apply, and nothing reads D3 any more.
    assert prune(undecided, threshold=0.5, max_inputs=1) == {
        "D0": ["D1"],
        "D1": ["D2"],
        "D2": ["E2"],
    }
    assert prune({"D0": {"E0": 0.5, "E1": 0.5, "G": 0.5}}, max_inputs=2) == {"D0": ["E0", "E1"]}
    with pytest.raises(ModelError, match="max_inputs must be at least 1"):
        prune(undecided, max_inputs=0)


def test_pruned_prnet_is_smaller_and_runs() -> None:
    supernet = small_prnet()
    searched = small_prnet(connectivity={"D0": ["E0", "D2"], "D2": ["E2", "G"]})
    assert not gates(searched)
    assert count_parameters(searched) < count_parameters(supernet)
    shallow = small_prnet(connectivity={"D1": ["E1", "E3"], "D5": ["E5"]})
    assert shallow.connectivity == {"D1": ["E1", "E3"]}
    assert len(shallow.encoder.stages) == 4 and shallow.stride == 8
    assert shallow.output_stage == "D1"
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert searched.eval()(x).shape == shallow.eval()(x).shape == (2, 1, 64, 64)


def test_connectivity_is_normalised_and_validated() -> None:
    config = PRNetConfig(connectivity=[["D3", "E0"], [], [], ["E3"], ["E4"]])
    assert config.connectivity == {"D0": ["E0", "D3"], "D3": ["E3"]}
    for bad in ({"D3": ["E2"]}, {"D9": ["E0"]}, {"D0": ["E0", "E0"]}, {"D0": "E0"}, {"D0": []}):
        with pytest.raises(ModelError):
            PRNetConfig(connectivity=bad)
    with pytest.raises(ModelError):
        build_network("resnet", {})
    with pytest.raises(ModelError):
        PRNetConfig.from_dict({"widht": 1.0})
    with pytest.raises(ModelError):
        UNetConfig(upsampling="nearest")
    with pytest.raises(InputError):
        small_prnet()(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("prnet", {**SMALL, "coord_channels": True, "connectivity": {"D0": ["E0", "E8", "G"]}}),
        ("unet", {"base_channels": 8, "upsampling": "bilinear"}),
    ],
)
def test_config_round_trip_rebuilds_the_same_network(family: str, config: dict) -> None:
    net = build_network(family, config)
    x = torch.randn(2, 1, 64, 64)
    net(x)  # move the batch norm statistics away from their initial values
    card = json.loads(json.dumps(net.config.to_dict()))
    clone = build_network(family, card)
    clone.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(net.eval()(x), clone.eval()(x))


@pytest.mark.parametrize(
    "network",
    [
        pytest.param(lambda: small_prnet(), id="prnet"),
        pytest.param(lambda: small_prnet(gated=True), id="prnet-search"),
        pytest.param(lambda: small_prnet(gated=True, stage_refine=True), id="prnet-refine-search"),
        pytest.param(lambda: small_prnet(gated=True, branch_kernel=3), id="prnet-3x3-search"),
        pytest.param(lambda: UNet(UNetConfig(base_channels=8)), id="unet"),
    ],
)
def test_training_steps_reduce_l1_loss(network) -> None:
    net: nn.Module = network().train()
    x = torch.randn(4, 1, 64, 64)
    target = 4 * F.interpolate(F.avg_pool2d(x, 8), size=x.shape[-2:], mode="bilinear")
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = F.l1_loss(net(x), target)
        total = loss + 0.01 * sparsity_loss(net) if gates(net) else loss
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        clamp_gates_(net)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_stage_refinement_starts_as_the_identity_and_then_learns() -> None:
    connectivity = {"D0": ["E0", "D3"], "D3": ["E3", "G"]}
    plain = small_prnet(connectivity=connectivity).eval()
    refined = small_prnet(connectivity=connectivity, stage_refine=True).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".refine." in key for key in missing)
    extra = sum(p.numel() for name, p in refined.named_parameters() if ".refine." in name)
    channels = SMALL["decoder_channels"]
    assert extra == 2 * channels * (9 + channels + 4)  # dw 3x3 + 1x1 + two batch norms
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(refined(x), plain(x))
    refined.train()
    loss = refined(x).square().mean()
    loss.backward()
    last_norm = refined.decoder["D0"].refine.body[-1]
    assert last_norm.weight.grad is not None and last_norm.weight.grad.abs().sum() > 0


def test_3x3_branches_see_a_neighbourhood_and_1x1_branches_do_not() -> None:
    """A change to one pixel of E0 reaches only that pixel of D0 through a 1x1 branch."""
    for kernel, reach in ((1, 1), (3, 9)):
        net = small_prnet(connectivity={"D0": ["E0", "G"]}, branch_kernel=kernel).eval()
        stage = net.decoder["D0"]
        assert stage.branches["E0"][1].kernel_size == (kernel, kernel)
        assert stage.branches["G"][1].kernel_size == (1, 1)
        features = {"E0": torch.rand(1, net.encoder.channels[0], 16, 16)}
        features["G"] = torch.rand(1, net.encoder.channels[-1], 1, 1)
        with torch.no_grad():
            before = stage(features, (16, 16))
            features["E0"][..., 8, 8] += 1.0  # G is left as it was: only E0's branch changes
            changed = (stage(features, (16, 16)) - before).abs().amax(dim=1) > 0
        assert int(changed.sum()) == reach
    with pytest.raises(ModelError, match="branch_kernel must be 1 or 3"):
        PRNetConfig(branch_kernel=5)


def test_sign_rule_makes_cells_positive_per_image() -> None:
    from napari_qpi.nn.sign import make_cells_positive

    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cell = 3.0 * ((yy - 12) ** 2 + (xx - 20) ** 2 < 36).float()
    batch = torch.stack([cell, -cell, -cell + 0.01 * torch.randn(32, 32)])[:, None]
    fixed = make_cells_positive(batch)
    for image in fixed:
        assert image.max() > 2.9 and image.min() > -0.1


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_cells_positive_network_is_the_plain_network_with_the_sign_rule(family: str) -> None:
    from napari_qpi.nn.sign import cells_positive_sign

    config = {**SMALL, "connectivity": {"D0": ["E0", "E3", "G"]}} if family == "prnet" else {}
    if family == "unet":
        config = {"base_channels": 4, "depth": 2}
    plain = build_network(family, config).eval()
    signed = build_network(family, {**config, "cells_positive": True}).eval()
    signed.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        raw = plain(x)
        torch.testing.assert_close(signed(x), raw * cells_positive_sign(raw))
        torch.testing.assert_close(signed(x, fix_sign=False), raw)


def test_native_head_starts_as_the_network_without_it_and_then_learns_at_the_input_grid() -> None:
    """A new native head adds zero, so a network gains one without changing its output; after
    a few steps it corrects the phase pixel by pixel, where the coarse head cannot."""
    connectivity = {"D0": ["E3", "G"]}  # the coarsest output: stride 8 taps into a stride-2 stage
    plain = small_prnet(connectivity=connectivity).eval()
    headed = small_prnet(connectivity=connectivity, native_head=4).eval()
    missing, unexpected = headed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("native_head.") for k in missing)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(headed(x), plain(x))

    target = x.clone()  # white noise: detail at the input's own pixel pitch
    losses = {}
    for name, net in (("plain", plain), ("headed", headed)):
        net.train()
        optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(60):
            loss = F.mse_loss(net(x), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        losses[name] = loss.item()
    assert losses["plain"] > 0.5 and losses["headed"] < 0.2 * losses["plain"], losses


def test_native_head_is_in_the_card_only_when_set() -> None:
    assert "native_head" not in PRNetConfig(**SMALL).to_dict()  # old cards stay as they were
    config = PRNetConfig(**SMALL, native_head=8)
    assert config.to_dict()["native_head"] == 8
    assert PRNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ModelError, match="native_head"):
        PRNetConfig(native_head=-1)


@pytest.mark.parametrize("family", ["prnet", "unet"])
def test_for_inference_folds_batch_norms_and_keeps_the_output(family: str) -> None:
    """Batch norms with trained statistics folded into their convolutions (a PRNet's decoder
    stages' into their branches), channels-last weights: the same phase to float rounding,
    fewer modules, no batch norm after a convolution left."""
    import copy

    from napari_qpi.nn.inference import fold_batch_norms, fold_stage_norms, for_inference

    torch.manual_seed(3)
    net = small_prnet(branch_kernel=3) if family == "prnet" else UNet(UNetConfig(base_channels=8))
    for module in net.modules():  # statistics and affine maps as training leaves them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(2, net.config.in_channels, 64, 64)
    with torch.no_grad():
        expected = net(x)
    fast = for_inference(copy.deepcopy(net))
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    assert fold_batch_norms(copy.deepcopy(fast)) == 0  # nothing left to fold
    assert fold_stage_norms(copy.deepcopy(fast)) == 0
    if family == "prnet":  # every stage's norm folded into its branches (G's included)
        assert len(net.decoder) > 1 and "G" in net.decoder["D0"].inputs
        assert not any(isinstance(s.norm, nn.BatchNorm2d) for s in fast.decoder.values())
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert left < norms
    weights = [m.weight for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    with torch.no_grad():
        got = fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # stages sum their branches in place here
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-5)


def test_a_gated_stage_keeps_its_norm_for_inference() -> None:
    """A gate scales a branch after its convolution, so the stage norm's shift cannot move into
    a bias: the search supernet's stages keep their norms and their output."""
    import copy

    from napari_qpi.nn.inference import for_inference

    torch.manual_seed(4)
    net = small_prnet(gated=True).eval()
    for gate in gates(net):
        gate.weight.data.uniform_(0.2, 0.9)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = net(x)
    fast = for_inference(copy.deepcopy(net))
    assert all(isinstance(stage.norm, nn.BatchNorm2d) for stage in fast.decoder.values())
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-5)

"""rmpe.sstn and rmpe.sstn.hourglass: coordinate bookkeeping of STN -> SPPE -> SDTN, the identity start,
gradients to theta, the parallel SPPE (frozen, training only), losses and the displacement measure."""
import pytest
import torch
from torch import nn

from rmpe.sstn import (SSTN, LocalizationNet, ResNetBackbone, SPPEFeatures, centre_displacement, heatmap_loss,
                       sstn_loss)
from rmpe.sstn.hourglass import StackedHourglass

torch.set_num_threads(2)


def ramp(n, c, h, w, dtype=torch.float64):
    """A different linear function of (x, y) per image and channel: bilinear sampling is exact on it."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, c, 3, generator=g, dtype=dtype)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return a[..., 0, None, None] * xs + a[..., 1, None, None] * ys + a[..., 2, None, None] * 10


def fixed_theta(n, dtype=torch.float64):
    # zoom in 2x (the crop covers half the proposal), shifted, slightly sheared: inside the proposal
    t = torch.tensor([[0.5, 0.05, 0.2], [-0.03, 0.45, -0.25]], dtype=dtype)
    return t.expand(n, 2, 3).clone()


class Pool4(nn.Module):
    """An 'identity-like SPPE': the crop averaged over 4x4 blocks, as the hourglass' stride-4 maps."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 4)


def test_sdtn_sppe_stn_is_identity_where_the_crop_lies():
    x = ramp(2, 3, 64, 48)
    model = SSTN(nn.Identity(), input_size=(64, 48), parallel=None).double()
    theta = fixed_theta(2)
    out = model(x, theta=theta)
    back = out.heatmaps[-1]
    # proposal pixels whose normalized position maps inside the crop (away from its border pixel)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    xn, yn = (2 * xs + 1) / 48 - 1, (2 * ys + 1) / 64 - 1
    gamma = torch.linalg.inv(torch.cat([theta[0], torch.tensor([[0, 0, 1.0]], dtype=theta.dtype)]))[:2]
    u = gamma[0, 0] * xn + gamma[0, 1] * yn + gamma[0, 2]
    v = gamma[1, 0] * xn + gamma[1, 1] * yn + gamma[1, 2]
    inside = (u.abs() < 1 - 2 / 48) & (v.abs() < 1 - 2 / 64)
    assert inside.sum() > 300
    torch.testing.assert_close(back[..., inside], x[..., inside], rtol=0, atol=1e-9)
    # outside the crop the de-transformed map is zero (nothing was predicted there)
    outside = (u.abs() > 1 + 2 / 48) | (v.abs() > 1 + 2 / 64)
    assert outside.sum() > 300 and back[..., outside].abs().max() < 1e-12


def test_crop_and_heatmap_share_the_normalized_frame():
    """A stride-4 'SPPE' (4x4 average) then the SDTN gives the stride-4 average of the proposal: the
    heatmap and the crop differ in size but theta applies to both."""
    x = ramp(2, 2, 64, 48)
    model = SSTN(Pool4(), input_size=(64, 48), parallel=None).double()
    theta = fixed_theta(2)
    back = model(x, theta=theta).heatmaps[-1]
    assert back.shape == (2, 2, 16, 12)
    expect = nn.functional.avg_pool2d(x, 4)  # the proposal at heatmap resolution
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    xn, yn = (2 * xs + 1) / 12 - 1, (2 * ys + 1) / 16 - 1
    g = torch.linalg.inv(torch.cat([theta[0], torch.tensor([[0, 0, 1.0]], dtype=theta.dtype)]))[:2]
    u, v = g[0, 0] * xn + g[0, 1] * yn + g[0, 2], g[1, 0] * xn + g[1, 1] * yn + g[1, 2]
    inside = (u.abs() < 1 - 2 / 12) & (v.abs() < 1 - 2 / 16)
    assert inside.sum() > 20
    torch.testing.assert_close(back[..., inside], expect[..., inside], rtol=0, atol=1e-9)


def test_stn_crop_matches_affine_grid_and_grid_sample():
    x = torch.randn(3, 3, 64, 48, dtype=torch.float64)
    model = SSTN(Pool4(), input_size=(64, 48), crop_size=(32, 24), parallel=None).double()
    theta = fixed_theta(3)
    out = model(x, theta=theta)
    ref = nn.functional.grid_sample(x, nn.functional.affine_grid(theta, (3, 3, 32, 24), align_corners=False),
                                    align_corners=False)
    torch.testing.assert_close(out.crops, ref, rtol=0, atol=1e-9)
    assert out.heatmaps[-1].shape == (3, 3, 8, 6)


def test_localization_starts_at_the_identity_and_learns():
    for head in ("spatial", "fc"):
        net = LocalizationNet((64, 48), width=4, blocks=(1, 1), head=head)
        x = torch.randn(5, 3, 64, 48)
        torch.testing.assert_close(net(x), torch.eye(2, 3).expand(5, 2, 3), rtol=0, atol=1e-6)
        model = SSTN(StackedHourglass(stacks=1, width=8, depth=1), loc_net=net, parallel="shared")
        out = model(x)
        target = torch.rand(5, 17, 16, 12)
        loss = sstn_loss(out, target, torch.ones(5, 17), target, torch.ones(5, 17))[0]
        loss.backward()
        g = net.fc.weight.grad if head == "fc" else net.points.weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_any_backbone_is_accepted_and_bad_features_raise():
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU())
    net = LocalizationNet((64, 48), backbone=backbone, head="fc")
    assert net(torch.randn(2, 3, 64, 48)).shape == (2, 2, 3)
    assert net.feature_dim == 4 * 16 * 12
    with pytest.raises(ValueError, match="feature_dim"):
        net(torch.randn(2, 3, 32, 48))
    with pytest.raises(ValueError, match="head"):
        LocalizationNet((64, 48), head="nope")
    with pytest.raises(ValueError, match="spatial"):
        LocalizationNet((64, 48), backbone=nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 48, 8)))
    assert ResNetBackbone(width=8, blocks=(1, 1, 1))(torch.zeros(1, 3, 64, 48)).shape == (1, 32, 8, 6)


def test_gradients_reach_theta_through_stn_and_sdtn():
    """d loss / d theta through the fused sampler and the SDTN's inverse equals autograd through
    F.affine_grid + F.grid_sample and torch.linalg.inv (a finite-difference gradcheck is unreliable
    here: bilinear sampling has kinks at pixel boundaries)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 24, dtype=torch.float64)
    sppe = nn.Conv2d(3, 2, 3, padding=1).double()
    model = SSTN(sppe, input_size=(32, 24), parallel=None).double()
    theta = torch.tensor([[[0.4713, 0.0517, 0.1931], [-0.0283, 0.4419, -0.2377]],
                          [[0.6121, -0.0311, -0.1089], [0.0427, 0.5833, 0.1373]]], dtype=torch.float64,
                         requires_grad=True)
    got = torch.autograd.grad(model(x, theta=theta).heatmaps[-1].pow(2).sum(), theta)[0]

    def grid(inp, t):
        return nn.functional.grid_sample(inp, nn.functional.affine_grid(t, (2, inp.shape[1], 32, 24), False), align_corners=False)

    a_inv = torch.linalg.inv(theta[:, :, :2])
    gamma = torch.cat([a_inv, -a_inv @ theta[:, :, 2:]], 2)
    ref = torch.autograd.grad(grid(sppe(grid(x, theta)), gamma).pow(2).sum(), theta)[0]
    assert got.abs().min() > 0
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls


@pytest.mark.parametrize("mode", ["shared", "copy"])
def test_parallel_branch_is_frozen_and_training_only(mode):
    torch.manual_seed(0)
    sppe = StackedHourglass(stacks=2, width=8, depth=1)
    model = SSTN(sppe, input_size=(32, 24), parallel=mode, loc_width=4, loc_blocks=(1, 1))
    calls = _count_calls(model.sppe)
    pcalls = _count_calls(model.parallel_sppe) if mode == "copy" else calls
    x = torch.randn(4, 3, 32, 24)
    tgt, w = torch.rand(4, 17, 8, 6), torch.ones(4, 17)
    model.train()
    out = model(x)
    assert out.parallel is not None and len(out.parallel) == 2
    assert (len(calls), len(pcalls)) == ((2, 2) if mode == "shared" else (1, 1))
    # the parallel loss alone gives no gradient to the SPPE's weights, but one to the STN
    par = heatmap_loss(out.parallel, tgt, w)
    par.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.sppe.parameters())
    assert model.loc_net.points.weight.grad.abs().sum() > 0
    if mode == "copy":
        assert not any(p.requires_grad for p in model.parallel_sppe.parameters())
        assert not model.parallel_sppe.training
    # inference: the parallel branch does not run
    model.eval()
    calls.clear(), pcalls.clear()
    out = model(x)
    assert out.parallel is None and len(calls) == 1 and (mode == "shared" or len(pcalls) == 0)
    total, main, p = sstn_loss(out, tgt, w)
    assert float(p) == 0 and torch.equal(total, main)
    # and a flag turns it off in training too
    model.train()
    model.use_parallel = False
    assert model(x).parallel is None


def test_parallel_branch_leaves_batch_statistics_alone():
    torch.manual_seed(0)
    sppe = StackedHourglass(stacks=1, width=8, depth=1)
    a = SSTN(sppe, input_size=(32, 24), parallel="shared", loc_width=4, loc_blocks=(1, 1))
    b = SSTN(StackedHourglass(stacks=1, width=8, depth=1), input_size=(32, 24), parallel=None, loc_width=4,
             loc_blocks=(1, 1))
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 32, 24)
    a.train(), b.train()
    a(x), b(x)
    for (k, va), (_, vb) in zip(a.sppe.named_buffers(), b.sppe.named_buffers()):
        assert torch.equal(va, vb), k


def test_sppe_features_backbone():
    torch.manual_seed(0)
    sppe = StackedHourglass(stacks=1, width=8, depth=1)
    model = SSTN(sppe, input_size=(32, 24), loc_features="sppe")
    # the SPPE is not registered twice: its weights are trained once, at the SPPE's learning rate
    assert not any(n.startswith("loc_net.backbone") for n, _ in model.named_parameters())
    x = torch.randn(3, 3, 32, 24)
    torch.testing.assert_close(model.loc_net(x), torch.eye(2, 3).expand(3, 2, 3))
    assert isinstance(model.loc_net.backbone, SPPEFeatures)


def test_hourglass_shapes_and_odd_sizes():
    net = StackedHourglass(num_joints=5, stacks=3, width=8, depth=3)
    out = net(torch.randn(2, 3, 64, 48))
    assert len(out) == 3 and all(o.shape == (2, 5, 16, 12) for o in out)
    assert net(torch.randn(1, 3, 36, 28))[-1].shape == (1, 5, 9, 7)
    for bad in (dict(stacks=0), dict(width=2), dict(depth=1.5), dict(num_joints=True)):
        with pytest.raises(ValueError):
            StackedHourglass(**bad)


def test_losses_and_displacement():
    pred = [torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)]
    tgt = torch.zeros(2, 3, 4, 4)
    w = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    # stack 1: 0; stack 2: 2 of 6 joints weighted, each contributes 16 ones over 96 elements
    assert float(heatmap_loss(pred, tgt, w)) == pytest.approx((0 + 32 / 96) / 2)
    with pytest.raises(ValueError, match="weight"):
        heatmap_loss(pred, tgt, torch.ones(2, 4))
    with pytest.raises(ValueError, match="does not match"):
        heatmap_loss(torch.zeros(2, 3, 5, 4), tgt, w)
    eye = torch.eye(2, 3).expand(2, 2, 3)
    star = eye.clone()
    star[:, 0, 2], star[:, 1, 2] = torch.tensor([0.3, 0.0]), torch.tensor([0.4, -0.5])
    torch.testing.assert_close(centre_displacement(eye, star), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(centre_displacement(star, star), torch.zeros(2))
    with pytest.raises(ValueError):
        centre_displacement(eye, star[:1])


def test_bad_inputs_raise():
    model = SSTN(Pool4(), input_size=(32, 24), parallel=None)
    with pytest.raises(ValueError, match="input_size"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        model(torch.zeros(1, 3, 32, 24, dtype=torch.uint8))
    with pytest.raises(ValueError, match="theta"):
        model(torch.zeros(2, 3, 32, 24), theta=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="parallel"):
        SSTN(Pool4(), parallel="both")
    with pytest.raises(ValueError, match="sppe"):
        SSTN(lambda x: x)
    with pytest.raises(ValueError, match="SPPE"):
        SSTN(nn.Flatten(), input_size=(32, 24), parallel=None)(torch.zeros(1, 3, 32, 24))
    with pytest.raises(ValueError, match="sync_parallel"):
        model.sync_parallel()
    # a singular theta surfaces as NaN maps, not a crash
    out = model(torch.zeros(1, 3, 32, 24), theta=torch.zeros(1, 2, 3))
    assert torch.isnan(out.heatmaps[-1]).all()
    x = torch.randn(1, 3, 32, 24)
    x0 = x.clone()
    model(x)
    assert torch.equal(x, x0)


@pytest.mark.parametrize("transform", ["affine", "scale", "translation"])
def test_localization_transforms_start_at_identity_and_keep_their_form(transform):
    torch.manual_seed(0)
    net = LocalizationNet((32, 24), width=4, blocks=(1, 1), transform=transform)
    x = torch.randn(3, 3, 32, 24)
    torch.testing.assert_close(net(x), torch.eye(2, 3).expand(3, 2, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    theta = net(x)
    assert theta.shape == (3, 2, 3)
    if transform != "affine":
        assert (theta[:, 0, 1] == 0).all() and (theta[:, 1, 0] == 0).all() and (theta[:, :, :2].diagonal(0, 1, 2) > 0).all()
    if transform == "translation":
        torch.testing.assert_close(theta[:, :, :2], torch.eye(2).expand(3, 2, 2))
    with pytest.raises(ValueError, match="transform"):
        LocalizationNet((32, 24), transform="rigid")
    with pytest.raises(ValueError, match="head='spatial'"):
        LocalizationNet((32, 24), head="fc", transform="scale")

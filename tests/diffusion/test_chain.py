"""The sampling chain: agreement with a diffusers loop, the KL, checkpointing and truncation."""

import copy
import random

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from seiko.diffusion import GaussianSampler, NoiseSchedule, gaussian_kl, posterior_step
from seiko.nets import SequenceDenoiser

B, L, V = 3, 6, 5
STEPS = 8


def tiny_denoiser(seed: int = 0, num_classes: int | None = None) -> SequenceDenoiser:
    torch.manual_seed(seed)
    return SequenceDenoiser(V, L, d_model=16, n_layers=1, n_heads=2, num_classes=num_classes)


class Recorder(nn.Module):
    """Wraps a denoiser; records, per call, the timestep and whether autograd was on, and, per
    backward pass through an output, the timestep it belonged to."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[tuple[int, bool]] = []
        self.backward_timesteps: list[int] = []

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        # Recorded before the call: a checkpoint's recomputation may stop inside the net once it
        # has what the backward pass needs (torch's early stop), and never return here.
        step = int(t[0])
        self.calls.append((step, torch.is_grad_enabled()))
        out = self.net(x, t, cond)
        if out.requires_grad:
            out.register_hook(lambda grad: self.backward_timesteps.append(step))
        return out


def fixed_noises(steps: int = STEPS) -> list[Tensor]:
    return [torch.randn(B, L, V) for _ in range(steps)]


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_no_grad_chain_matches_diffusers_ddim_loop(prediction_type, eta, spacing):
    net = tiny_denoiser().eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing=spacing,
    )
    # DDIMScheduler steps t -> t - 1000 // n; with n dividing 1000 that is the next timestep for
    # both spacings, which is what the chain steps to.
    scheduler.set_timesteps(STEPS)
    sampler = GaussianSampler(
        NoiseSchedule.from_scheduler(scheduler), num_steps=STEPS, eta=eta, spacing=spacing
    )
    x_T, noises = torch.randn(B, L, V), fixed_noises()
    cond = torch.tensor([0, 2, 1])
    out = sampler(net, x_T, cond=cond, noises=noises, return_trajectory=True)

    x = x_T
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            model_output = net(x, t.repeat(B), cond)
            x = scheduler.step(model_output, t, x, eta=eta, variance_noise=noises[i]).prev_sample
            torch.testing.assert_close(out.trajectory[i + 1], x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.x0, x, rtol=1e-4, atol=1e-5)
    assert not out.x0.requires_grad
    assert torch.equal(out.kl, torch.zeros(B)) and out.kl_per_step.shape == (STEPS, B)


def test_no_grad_chain_matches_diffusers_ddpm_loop_with_generator():
    net = tiny_denoiser().eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_small")
    scheduler.set_timesteps(STEPS)
    sampler = GaussianSampler(NoiseSchedule.from_scheduler(scheduler), num_steps=STEPS, kind="ddpm")
    x_T = torch.randn(B, L, V)
    out = sampler(net, x_T, generator=torch.Generator().manual_seed(3))

    x, generator = x_T, torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t.repeat(B), None), t, x, generator=generator).prev_sample
    torch.testing.assert_close(out.x0, x, rtol=1e-4, atol=1e-5)


def test_trajectory_and_kl_per_step_match_single_steps():
    net, ref = tiny_denoiser(0).eval(), tiny_denoiser(1).eval()
    schedule = NoiseSchedule.create()
    sampler = GaussianSampler(schedule, num_steps=STEPS, eta=0.7, kl_reduction="sum")
    out = sampler(
        net, torch.randn(B, L, V), reference=ref, noises=fixed_noises(), return_trajectory=True
    )
    assert len(out.trajectory) == STEPS + 1
    assert all(not x.requires_grad for x in out.trajectory)
    timesteps = sampler.timesteps + [-1]
    with torch.no_grad():
        for i in range(STEPS):
            x_t, t, t_prev = out.trajectory[i], timesteps[i], timesteps[i + 1]
            t_batch = torch.full((B,), t)
            ours = posterior_step(schedule, net(x_t, t_batch), x_t, t, t_prev, eta=0.7)
            theirs = posterior_step(schedule, ref(x_t, t_batch), x_t, t, t_prev, eta=0.7)
            expected = gaussian_kl(ours.mean, theirs.mean, ours.std, "sum")
            torch.testing.assert_close(out.kl_per_step[i], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.kl, out.kl_per_step.sum(0))
    assert (out.kl > 0).all()


@pytest.mark.parametrize("kl_gradient", ["exact", "detached"])
def test_kl_to_itself_is_zero(kl_gradient):
    net = tiny_denoiser().eval()
    sampler = GaussianSampler(NoiseSchedule.create(), num_steps=STEPS, kl_gradient=kl_gradient)
    out = sampler(net, torch.randn(B, L, V), reference=copy.deepcopy(net), grad=True)
    if kl_gradient == "exact":
        assert torch.equal(out.kl, torch.zeros(B))
    else:  # the no-grad reference takes torch's fused transformer path: equal to float rounding
        torch.testing.assert_close(out.kl, torch.zeros(B), rtol=0, atol=1e-9)
    assert out.x0.requires_grad and out.kl.requires_grad


def test_reference_is_skipped_on_deterministic_steps():
    # DDIM's last step to x0 (final alpha 1) has std 0, and eta=0 makes every step deterministic:
    # no KL term there, so the reference is not evaluated there.
    schedule = NoiseSchedule.create()
    x_T = torch.randn(B, L, V)
    for eta, expected_calls in ((1.0, STEPS - 1), (0.0, 0)):
        ref = Recorder(tiny_denoiser(1))
        out = GaussianSampler(schedule, num_steps=STEPS, eta=eta)(
            tiny_denoiser(), x_T, reference=ref
        )
        assert len(ref.calls) == expected_calls
        assert torch.equal(out.kl_per_step[-1], torch.zeros(B))
        assert (out.kl > 0).all() == (eta > 0)


@pytest.mark.parametrize("kl_gradient", ["exact", "detached"])
@pytest.mark.parametrize("truncate", [None, 3])
def test_checkpointed_and_plain_chains_give_the_same_gradients(truncate, kl_gradient):
    schedule = NoiseSchedule.create()
    ref = tiny_denoiser(1).requires_grad_(False)
    x_T_init, noises = torch.randn(B, L, V), fixed_noises()
    results = []
    for checkpoint in (False, True):
        net = tiny_denoiser(0)
        x_T = x_T_init.clone().requires_grad_(True)  # a learned initial noise
        sampler = GaussianSampler(
            schedule,
            num_steps=STEPS,
            checkpoint=checkpoint,
            truncate=truncate,
            kl_reduction="sum",
            kl_gradient=kl_gradient,
        )
        out = sampler(net, x_T, reference=ref, grad=True, noises=noises)
        (out.x0.pow(2).sum() + 0.3 * out.kl.sum()).backward()
        results.append((out, x_T.grad, {n: p.grad for n, p in net.named_parameters()}))
    (plain, plain_xT, plain_grads), (ckpt, ckpt_xT, ckpt_grads) = results
    torch.testing.assert_close(ckpt.x0, plain.x0)
    torch.testing.assert_close(ckpt.kl, plain.kl)
    assert (plain.kl > 0).all()
    if truncate is None:
        torch.testing.assert_close(ckpt_xT, plain_xT)
        assert plain_xT.abs().sum() > 0
    else:  # the first steps ran without autograd: x_T is cut off from the loss
        assert plain_xT is None and ckpt_xT is None
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        assert grad is not None, name
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


class DetachedInput(nn.Module):
    """A reference whose input is cut from the graph: what "detached" must be equivalent to."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.net(x.detach(), t, cond)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_kl_gradient_detached_drops_only_the_reference_input_term(checkpoint):
    schedule = NoiseSchedule.create()
    ref = tiny_denoiser(1).requires_grad_(False)
    x_T, noises = torch.randn(B, L, V), fixed_noises()

    def run(kl_gradient: str, reference: nn.Module) -> tuple[Tensor, Tensor, list[Tensor]]:
        net = tiny_denoiser(0)
        sampler = GaussianSampler(
            schedule, num_steps=STEPS, checkpoint=checkpoint, kl_gradient=kl_gradient
        )
        out = sampler(net, x_T, reference=reference, grad=True, noises=noises)
        out.kl.sum().backward()
        return out.x0, out.kl, [p.grad.clone() for p in net.parameters()]

    x_exact, kl_exact, g_exact = run("exact", ref)
    x_det, kl_det, g_det = run("detached", ref)
    _, _, g_by_hand = run("exact", DetachedInput(ref))
    # Same chain, same KL value: only the gradient differs.
    torch.testing.assert_close(x_det, x_exact)
    torch.testing.assert_close(kl_det, kl_exact)
    for a, b in zip(g_det, g_by_hand, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    difference = sum((a - b).abs().sum() for a, b in zip(g_det, g_exact, strict=True))
    assert difference > 1e-4 * sum(g.abs().sum() for g in g_exact)


def test_kl_gradient_detached_evaluates_the_reference_once_without_grad():
    ref = Recorder(tiny_denoiser(1).requires_grad_(False))
    sampler = GaussianSampler(NoiseSchedule.create(), num_steps=STEPS, checkpoint=True)
    assert sampler.kl_gradient == "detached"
    out = sampler(tiny_denoiser(), torch.randn(B, L, V), reference=ref, grad=True)
    (out.x0.sum() + out.kl.sum()).backward()
    # One call per stochastic step (the last DDIM step is deterministic), none recomputed.
    assert ref.calls == [(t, False) for t in sampler.timesteps[:-1]]
    with pytest.raises(ValueError, match="kl_gradient"):
        GaussianSampler(NoiseSchedule.create(), kl_gradient="approximate")


@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("truncate", [1, 3, STEPS])
def test_truncation_backpropagates_through_exactly_the_last_steps(truncate, checkpoint):
    net = Recorder(tiny_denoiser())
    ref = tiny_denoiser(1).requires_grad_(False)
    sampler = GaussianSampler(
        NoiseSchedule.create(), num_steps=STEPS, checkpoint=checkpoint, truncate=truncate
    )
    x_T = torch.randn(B, L, V, requires_grad=True)
    out = sampler(net, x_T, reference=ref, grad=True)
    (out.x0.sum() + out.kl.sum()).backward(retain_graph=True)

    last = sampler.timesteps[-truncate:]
    assert sorted(net.backward_timesteps) == sorted(last)
    # Checkpointing runs each gradient step's first pass without autograd and recomputes it,
    # with autograd, in the backward pass: one extra call per gradient step, the only one with grad.
    forward_with_grad = [t for t, requires_grad in net.calls if requires_grad]
    assert sorted(forward_with_grad) == sorted(last)
    assert len(net.calls) == STEPS + (truncate if checkpoint else 0)
    assert [t for t, _ in net.calls[:STEPS]] == sampler.timesteps
    # The KL terms of the first steps do not reach the parameters either.
    first = STEPS - truncate
    if first and out.kl_per_step.requires_grad:  # the last step is deterministic: no KL term
        grads = torch.autograd.grad(
            out.kl_per_step[:first].sum(), list(net.parameters()), allow_unused=True
        )
        assert all(g is None or not g.any() for g in grads)
    assert (x_T.grad is not None) == (truncate == STEPS)


def test_truncate_min_draws_the_number_of_gradient_steps():
    sampler = GaussianSampler(NoiseSchedule.create(), num_steps=STEPS, truncate=5, truncate_min=2)
    draws = {sampler.grad_steps(random.Random(seed)) for seed in range(200)}
    assert draws == {2, 3, 4, 5}
    assert GaussianSampler(NoiseSchedule.create(), num_steps=STEPS, truncate=4).grad_steps() == 4
    assert GaussianSampler(NoiseSchedule.create(), num_steps=STEPS).grad_steps() == STEPS

    counts = set()
    for _ in range(30):
        net = Recorder(tiny_denoiser())
        out = sampler(net, torch.randn(B, L, V), grad=True)
        out.x0.sum().backward()
        counts.add(len(net.backward_timesteps))
    assert counts <= {2, 3, 4, 5} and len(counts) > 1


def test_grad_steps_override_and_no_grad_mode():
    sampler = GaussianSampler(NoiseSchedule.create(), num_steps=STEPS, truncate=2)
    net = Recorder(tiny_denoiser())
    sampler(net, torch.randn(B, L, V), grad=True, grad_steps=5).x0.sum().backward()
    assert sorted(net.backward_timesteps) == sorted(sampler.timesteps[-5:])
    # grad=False: nothing carries gradient, whatever x_T or truncate say.
    out = sampler(net, torch.randn(B, L, V, requires_grad=True))
    assert not out.x0.requires_grad


def test_bad_arguments_raise():
    schedule = NoiseSchedule.create()
    with pytest.raises(ValueError, match=r"truncate must be in \[1, num_steps=8\], got 0"):
        GaussianSampler(schedule, num_steps=STEPS, truncate=0)
    with pytest.raises(ValueError, match=r"truncate must be in \[1, num_steps=8\], got 9"):
        GaussianSampler(schedule, num_steps=STEPS, truncate=9)
    with pytest.raises(ValueError, match="truncate_min needs truncate"):
        GaussianSampler(schedule, num_steps=STEPS, truncate_min=2)
    with pytest.raises(ValueError, match=r"truncate_min must be in \[1, truncate=3\], got 4"):
        GaussianSampler(schedule, num_steps=STEPS, truncate=3, truncate_min=4)
    with pytest.raises(ValueError, match=r"truncate_min must be in \[1, truncate=3\], got 0"):
        GaussianSampler(schedule, num_steps=STEPS, truncate=3, truncate_min=0)
    sampler = GaussianSampler(schedule, num_steps=STEPS)
    net, x_T = tiny_denoiser(), torch.randn(B, L, V)
    with pytest.raises(ValueError, match=r"grad_steps must be in \[0, 8\], got 9"):
        sampler(net, x_T, grad=True, grad_steps=9)
    with pytest.raises(ValueError, match="noises has 7 tensors, the chain has 8 steps"):
        sampler(net, x_T, noises=fixed_noises(7))


def test_prior_shape_and_generator():
    sampler = GaussianSampler(NoiseSchedule.create(), num_steps=STEPS)
    x = sampler.prior(4, (L, V), generator=torch.Generator().manual_seed(1))
    assert x.shape == (4, L, V)
    assert torch.equal(x, torch.randn(4, L, V, generator=torch.Generator().manual_seed(1)))


def test_checkpoint_recomputes_dropout_with_the_same_random_state():
    # A denoiser with dropout, in training mode: the recomputation must draw the same masks as
    # the first pass, or the gradient would belong to another network.
    torch.manual_seed(0)
    net = SequenceDenoiser(V, L, d_model=16, n_layers=1, n_heads=2, dropout=0.3).train()
    sampler_args = dict(num_steps=STEPS, kl_reduction="sum")
    x_T, noises = torch.randn(B, L, V), fixed_noises()
    results = []
    for checkpoint in (False, True):
        net.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        sampler = GaussianSampler(NoiseSchedule.create(), checkpoint=checkpoint, **sampler_args)
        out = sampler(net, x_T, grad=True, noises=noises)
        grads = torch.autograd.grad(out.x0.pow(2).sum(), list(net.parameters()))
        results.append((out.x0.detach(), grads))
    (x_plain, g_plain), (x_ckpt, g_ckpt) = results
    torch.testing.assert_close(x_ckpt, x_plain)
    for a, b in zip(g_ckpt, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_checkpoint_recomputes_in_the_train_eval_mode_of_the_first_pass():
    # The chain runs in eval mode (dropout off) but the caller puts the network back in training
    # mode before backward, as a LightningModule does: the recomputation must still be the
    # eval-mode function, or the gradient would belong to a network with dropout on.
    torch.manual_seed(0)
    net = SequenceDenoiser(V, L, d_model=16, n_layers=1, n_heads=2, dropout=0.5)
    x_T, noises = torch.randn(B, L, V), fixed_noises()
    results = []
    for checkpoint in (False, True):
        net.eval()
        sampler = GaussianSampler(NoiseSchedule.create(), num_steps=STEPS, checkpoint=checkpoint)
        out = sampler(net, x_T, grad=True, noises=noises)
        net.train()
        grads = torch.autograd.grad(out.x0.pow(2).sum(), list(net.parameters()))
        assert net.training and all(m.training for m in net.modules())
        results.append(torch.cat([g.flatten() for g in grads]))
    plain, ckpt = results
    # The no-grad first pass may take torch's fused attention kernels (eval mode), whose
    # rounding differs from the plain chain's in the last bits: close, not bitwise equal.
    torch.testing.assert_close(ckpt, plain, rtol=1e-3, atol=1e-4 * plain.abs().max().item())


def _early_kl_gradient(sampler, net, ref, trajectory, first: int) -> list[Tensor]:
    """d/d theta of sum_i KL_i over the first ``first`` steps, each at its stored x_i (constant)."""
    total = 0.0
    for i in range(first):
        coef = sampler.coefficients[i]
        if coef.std == 0:
            continue
        x = trajectory[i]
        t = torch.full((B,), sampler.timesteps[i])
        with torch.no_grad():
            ref_out = ref(x, t, None)
        total = total + sampler._step(net, ref_out, x, t, None, coef)[1].sum()
    return torch.autograd.grad(total, list(net.parameters()))


def test_kl_sampled_steps_all_gives_the_exact_early_kl_gradient_and_keeps_the_value():
    net, ref = tiny_denoiser(0), tiny_denoiser(1).requires_grad_(False)
    truncate, first = 2, STEPS - 2
    x_T, noises = torch.randn(B, L, V), fixed_noises()
    kwargs = dict(num_steps=STEPS, eta=1.0, truncate=truncate, kl_reduction="sum")
    plain = GaussianSampler(NoiseSchedule.create(), **kwargs)
    sampled = GaussianSampler(NoiseSchedule.create(), kl_sampled_steps=STEPS, **kwargs)
    a = plain(net, x_T, reference=ref, grad=True, noises=noises, return_trajectory=True)
    b = sampled(net, x_T, reference=ref, grad=True, noises=noises)
    # the value is the same KL
    torch.testing.assert_close(b.kl, a.kl)
    torch.testing.assert_close(b.kl_per_step, a.kl_per_step)
    # the extra gradient is exactly the early steps' parameter gradient at the stored x_t
    grad_a = torch.autograd.grad(a.kl.sum(), list(net.parameters()), allow_unused=True)
    grad_b = torch.autograd.grad(b.kl.sum(), list(net.parameters()), allow_unused=True)
    early = _early_kl_gradient(plain, net, ref, a.trajectory, first)
    assert any(g.abs().sum() > 0 for g in early)
    for ga, gb, ge in zip(grad_a, grad_b, early, strict=True):
        ga = torch.zeros_like(ge) if ga is None else ga
        torch.testing.assert_close(gb, ga + ge, rtol=1e-4, atol=1e-6)


def test_kl_sampled_steps_draws_an_unbiased_subset():
    net, ref = tiny_denoiser(0), tiny_denoiser(1).requires_grad_(False)
    x_T, noises = torch.randn(B, L, V), fixed_noises()
    # the last step is deterministic (no KL term): truncate=2 leaves one KL step with autograd
    kwargs = dict(num_steps=STEPS, eta=1.0, truncate=2, kl_reduction="sum")
    plain = GaussianSampler(NoiseSchedule.create(), **kwargs)
    sampled = GaussianSampler(NoiseSchedule.create(), kl_sampled_steps=2, **kwargs)
    a = plain(net, x_T, reference=ref, grad=True, noises=noises, return_trajectory=True)
    base = torch.autograd.grad(a.kl.sum(), list(net.parameters()), allow_unused=True)
    early = _early_kl_gradient(plain, net, ref, a.trajectory, STEPS - 2)
    flat = torch.cat([g.flatten() for g in early])

    random.seed(0)
    draws = []
    for _ in range(200):
        b = sampled(net, x_T, reference=ref, grad=True, noises=noises)
        grads = torch.autograd.grad(b.kl.sum(), list(net.parameters()), allow_unused=True)
        extra = [
            gb - (torch.zeros_like(gb) if ga is None else ga)
            for gb, ga in zip(grads, base, strict=True)
        ]
        draws.append(torch.cat([g.flatten() for g in extra]))
    draws = torch.stack(draws)
    # one draw is a subset: not the full gradient; the mean over draws converges to it
    assert (draws[0] - flat).norm() > 0.05 * flat.norm()
    assert (draws.mean(0) - flat).norm() < 0.1 * flat.norm()


def test_kl_sampled_steps_is_idle_without_reference_or_gradient():
    net = Recorder(tiny_denoiser())
    sampler = GaussianSampler(
        NoiseSchedule.create(), num_steps=STEPS, truncate=2, kl_sampled_steps=3
    )
    sampler(net, torch.randn(B, L, V), grad=True).x0.sum().backward()
    assert len(net.calls) == STEPS  # no reference: no extra denoiser call
    net.calls.clear()
    sampler(net, torch.randn(B, L, V), reference=tiny_denoiser(1))
    assert len(net.calls) == STEPS  # sampling without gradient: none either
    with pytest.raises(ValueError, match="kl_sampled_steps must be an integer >= 0, got -1"):
        GaussianSampler(NoiseSchedule.create(), kl_sampled_steps=-1)

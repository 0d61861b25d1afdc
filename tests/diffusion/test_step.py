"""One reverse step against diffusers' DDIM/DDPM schedulers; the Gaussian KL and log-density."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch.distributions import Normal

from seiko.diffusion import (
    NoiseSchedule,
    gaussian_kl,
    gaussian_log_prob,
    posterior_step,
    step_coefficients,
)

# diffusers computes in float32 from float32 alphas, we in float64 from float64 ones; at t = 999,
# x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) amplifies float32 rounding by 1 / sqrt(a) ~ 100x.
RTOL, ATOL = 1e-4, 1e-5
NUM_STEPS = 10
STEP_INDICES = (0, 1, 5, NUM_STEPS - 1)  # the first, a middle and the last (to x0) steps


def _model_output(prediction_type: str, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, model_output) of shape (3, 4, 5); a large output when clipping must engage."""
    x_t = torch.randn(3, 4, 5)
    output = torch.randn(3, 4, 5) * (8.0 if clip else 1.0)
    return x_t, output


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_ddim_step_matches_diffusers(beta_schedule, prediction_type, eta, clip):
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=clip,
        set_alpha_to_one=False,  # a final alpha != 1 makes the last step a real test
    )
    scheduler.set_timesteps(NUM_STEPS)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    ratio = 1000 // NUM_STEPS
    for i in STEP_INDICES:
        t = int(scheduler.timesteps[i])
        x_t, output = _model_output(prediction_type, clip)
        noise = torch.randn_like(x_t)
        ours = posterior_step(schedule, output, x_t, t, t - ratio, eta=eta, noise=noise)
        ref = scheduler.step(
            output, t, x_t, eta=eta, use_clipped_model_output=True, variance_noise=noise
        )
        torch.testing.assert_close(ours.sample, ref.prev_sample, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.pred_x0, ref.pred_original_sample, rtol=RTOL, atol=ATOL)
        # The mean is diffusers' step without noise; sample - mean is exactly std * noise.
        no_noise = scheduler.step(
            output,
            t,
            x_t,
            eta=eta,
            use_clipped_model_output=True,
            variance_noise=torch.zeros_like(x_t),
        )
        torch.testing.assert_close(ours.mean, no_noise.prev_sample, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.sample - ours.mean, ours.std * noise, rtol=1e-4, atol=1e-6)
        a_t = float(scheduler.alphas_cumprod[t])
        a_prev = float(scheduler.alphas_cumprod[t - ratio]) if t >= ratio else a_t  # final = a_0
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)  # DDIM paper, eq. 16
        assert ours.std == pytest.approx(eta * math.sqrt(variance), rel=1e-5)
        if clip:
            assert ours.pred_x0.abs().max() == 1.0


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_ddpm_step_matches_diffusers(beta_schedule, prediction_type, clip):
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=clip,
        variance_type="fixed_small",
    )
    scheduler.set_timesteps(NUM_STEPS)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    timesteps = scheduler.timesteps.tolist() + [-1]
    for i in STEP_INDICES:
        t, t_prev = timesteps[i], timesteps[i + 1]
        x_t, output = _model_output(prediction_type, clip)
        ours = posterior_step(
            schedule,
            output,
            x_t,
            t,
            t_prev,
            kind="ddpm",
            generator=torch.Generator().manual_seed(i),
        )
        ref = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(ours.sample, ref.prev_sample, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(ours.pred_x0, ref.pred_original_sample, rtol=RTOL, atol=ATOL)
        assert (ours.std == 0.0) == (t == 0)  # diffusers adds no noise on the step from t = 0


def test_ddpm_single_steps_without_inference_timesteps():
    # Without set_timesteps, DDPMScheduler steps t -> t - 1: the full 1000-step chain.
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_small")
    schedule = NoiseSchedule.from_scheduler(scheduler)
    for t in (999, 500, 1, 0):
        x_t, output = torch.randn(2, 6), torch.randn(2, 6)
        ours = posterior_step(
            schedule, output, x_t, t, t - 1, kind="ddpm", generator=torch.Generator().manual_seed(t)
        )
        ref = scheduler.step(output, t, x_t, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours.sample, ref.prev_sample, rtol=RTOL, atol=ATOL)


def test_posterior_step_draws_noise_from_generator():
    schedule = NoiseSchedule.create()
    x_t, output = torch.randn(2, 3), torch.randn(2, 3)
    generator = torch.Generator().manual_seed(7)
    out = posterior_step(schedule, output, x_t, 500, 480, generator=generator)
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out.sample, out.mean + out.std * noise)


def test_step_coefficients_reject_bad_arguments():
    schedule = NoiseSchedule.create(num_train_timesteps=100)
    with pytest.raises(ValueError, match="kind='ddpo' is not one of"):
        step_coefficients(schedule, 50, 40, "ddpo", 1.0)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\], got 1.5"):
        step_coefficients(schedule, 50, 40, "ddim", 1.5)
    with pytest.raises(ValueError, match=r"timestep 100 is outside \[0, 99\]"):
        step_coefficients(schedule, 100, 90, "ddim", 1.0)


def test_gaussian_kl_matches_monte_carlo():
    # KL(p || q) = E_p[log p(x) - log q(x)], estimated with 100k draws from p per sample. The log
    # ratio is linear in a Gaussian, hence well behaved; the tolerance is 5 standard errors.
    std, n = 0.7, 100_000
    mean_p, mean_q = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    x = mean_p + std * torch.randn(n, 3, 8, dtype=torch.float64)
    log_ratio = (Normal(mean_p, std).log_prob(x) - Normal(mean_q, std).log_prob(x)).sum(-1)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    exact = gaussian_kl(mean_p, mean_q, std)
    assert exact.shape == (3,)
    assert ((estimate - exact).abs() < 5 * stderr).all(), (estimate, exact, stderr)
    assert (stderr < 0.01 * exact).all()  # tight: the check above pins the KL to a few percent


def test_gaussian_kl_reductions_and_deterministic_steps():
    mean_p, mean_q = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    total = gaussian_kl(mean_p, mean_q, 0.3, "sum")
    torch.testing.assert_close(gaussian_kl(mean_p, mean_q, 0.3, "mean"), total / 15)
    torch.testing.assert_close(total, (mean_p - mean_q).pow(2).sum((1, 2)) / (2 * 0.3**2))
    assert torch.equal(gaussian_kl(mean_p, mean_q, 0.0), torch.zeros(4))
    assert torch.equal(gaussian_kl(mean_p, mean_p, 0.3), torch.zeros(4))
    with pytest.raises(ValueError, match="reduction='max' is not one of"):
        gaussian_kl(mean_p, mean_q, 0.3, "max")


def test_gaussian_log_prob_matches_torch_normal():
    sample, mean = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    expected = Normal(mean, 0.4).log_prob(sample).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(sample, mean, 0.4), expected)
    with pytest.raises(ValueError, match="deterministic step"):
        gaussian_log_prob(sample, mean, 0.0)

"""NoiseSchedule against diffusers' schedulers: betas, timesteps, forward noising, targets."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from seiko.diffusion import NoiseSchedule


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_create_matches_diffusers_betas(beta_schedule):
    schedule = NoiseSchedule.create(num_train_timesteps=200, beta_schedule=beta_schedule)
    scheduler = DDPMScheduler(num_train_timesteps=200, beta_schedule=beta_schedule)
    assert schedule.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(schedule.alphas_cumprod.float(), scheduler.alphas_cumprod)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_train_timesteps", [1000, 100])
@pytest.mark.parametrize("num_steps", [1, 3, 7, 10, 50, 100])
def test_timesteps_match_set_timesteps(spacing, num_train_timesteps, num_steps):
    scheduler = DDIMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing=spacing)
    scheduler.set_timesteps(num_steps)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    assert schedule.timesteps(num_steps, spacing) == scheduler.timesteps.tolist()


def test_timesteps_reject_bad_arguments():
    schedule = NoiseSchedule.create(num_train_timesteps=100)
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 100\], got 0"):
        schedule.timesteps(0)
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 100\], got 101"):
        schedule.timesteps(101)
    with pytest.raises(ValueError, match="spacing='uniform' is not one of"):
        schedule.timesteps(10, "uniform")


def test_add_noise_matches_scheduler():
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    schedule = NoiseSchedule.from_scheduler(scheduler)
    x0, noise = torch.randn(6, 4, 3), torch.randn(6, 4, 3)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    torch.testing.assert_close(schedule.add_noise(x0, noise, t), scheduler.add_noise(x0, noise, t))


def test_targets_per_prediction_type():
    x0, noise = torch.randn(5, 7), torch.randn(5, 7)
    t = torch.tensor([0, 10, 400, 800, 999])
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    v = NoiseSchedule.from_scheduler(scheduler).target(x0, noise, t)
    torch.testing.assert_close(v, scheduler.get_velocity(x0, noise, t))
    assert NoiseSchedule.create(prediction_type="epsilon").target(x0, noise, t) is noise
    assert NoiseSchedule.create(prediction_type="sample").target(x0, noise, t) is x0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_split_inverts_the_target(prediction_type):
    # A perfect denoiser outputs the target; split must recover the (x0, noise) that made x_t.
    schedule = NoiseSchedule.create(prediction_type=prediction_type)
    x0, noise = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    for step in (1, 300, 999):
        t = torch.full((4,), step)
        x_t = schedule.add_noise(x0, noise, t)
        alpha = float(schedule.alphas_cumprod[step])
        for a_t in (alpha, schedule.alphas_cumprod[t][:, None]):  # float and tensor forms
            pred_x0, pred_eps = schedule.split(schedule.target(x0, noise, t), x_t, a_t)
            torch.testing.assert_close(pred_x0, x0)
            torch.testing.assert_close(pred_eps, noise)


def test_split_clips_x0_and_rederives_eps():
    schedule = NoiseSchedule.create(clip_sample=1.0)
    x_t, eps = torch.randn(3, 50), 5 * torch.randn(3, 50)
    a_t = float(schedule.alphas_cumprod[500])
    pred_x0, pred_eps = schedule.split(eps, x_t, a_t)
    assert pred_x0.abs().max() == 1.0  # the huge eps pushes x0 far outside [-1, 1]
    torch.testing.assert_close(x_t, a_t**0.5 * pred_x0 + (1 - a_t) ** 0.5 * pred_eps)


def test_from_scheduler_reads_clip_and_final_alpha():
    scheduler = DDIMScheduler(clip_sample=True, clip_sample_range=2.0, set_alpha_to_one=False)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    assert schedule.clip_sample == 2.0
    assert schedule.final_alpha_cumprod == pytest.approx(float(scheduler.alphas_cumprod[0]))
    assert NoiseSchedule.from_scheduler(DDIMScheduler(clip_sample=False)).clip_sample is None
    assert schedule.num_train_timesteps == 1000


def test_validation_errors():
    good = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="prediction_type='x0' is not one of"):
        NoiseSchedule(good, prediction_type="x0")
    with pytest.raises(ValueError, match="1-D tensor of length >= 2"):
        NoiseSchedule(good[:1])
    with pytest.raises(ValueError, match="non-increasing"):
        NoiseSchedule(good.flip(0))
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        NoiseSchedule(torch.tensor([1.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="clip_sample must be positive or None, got 0.0"):
        NoiseSchedule(good, clip_sample=0.0)
    with pytest.raises(ValueError, match="beta_schedule='cosine' is not one of"):
        NoiseSchedule.create(beta_schedule="cosine")

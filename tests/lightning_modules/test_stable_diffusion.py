"""StableDiffusion on a tiny pipeline built in code, saved, and loaded the way users load theirs.

The pipeline (a UNet2DConditionModel with one cross-attention block, a two-block AutoencoderKL,
a two-layer CLIPTextModel, a CLIPTokenizer made from a 58-token vocabulary and four merges, and
SD's own PNDM scheduler config) is written with ``save_pretrained`` to a temporary directory, and
every test loads it through ``StableDiffusion(pretrained_path=...)``: the users' path.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import string
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("peft")

from seiko.datamodules.prompts import PromptDataModule  # noqa: E402
from seiko.lightning_modules.base import SamplerConfig  # noqa: E402
from seiko.lightning_modules.stable_diffusion import (  # noqa: E402
    AdapterDisabled,
    ClassifierFreeGuidance,
    StableDiffusion,
    adapters_disabled,
)

MAX_LENGTH = 12  # the tokenizer's model_max_length: text embeddings are (B, 12, 16)
STEPS = 4


def _tokenizer_source(folder: Path) -> list[str]:
    """vocab.json / merges.txt of a tiny CLIP BPE: the letters, each letter ending a word, and
    merges that make 'cat' and 'dog' single tokens."""
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for letter in string.ascii_lowercase:
            vocab[letter + suffix] = len(vocab)
    for token in ("ca", "cat</w>", "do", "dog</w>"):
        vocab[token] = len(vocab)
    merges = ["#version: 0.2", "c a", "ca t</w>", "d o", "do g</w>"]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_LENGTH}))
    return list(vocab)


def build_tiny_pipeline(root: Path) -> Path:
    """A Stable-Diffusion-shaped pipeline directory with tiny random networks."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = _tokenizer_source(root / "tokenizer_source")
    CLIPTokenizer.from_pretrained(str(root / "tokenizer_source")).save_pretrained(
        root / "tokenizer"
    )
    text_config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=16,
    )
    CLIPTextModel(text_config).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    ).save_pretrained(root / "vae")
    # Stable Diffusion 1.x's scheduler config (a PNDM scheduler; the module runs DDIM on it)
    PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


def make_module(path: Path, **kwargs) -> StableDiffusion:
    kwargs.setdefault("sampler", SamplerConfig(num_steps=STEPS, eta=1.0))
    kwargs.setdefault("lora_rank", 2)
    module = StableDiffusion(pretrained_path=str(path), **kwargs)
    module.configure_model()
    return module


def lora_params(module: StableDiffusion) -> dict[str, nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if "lora_" in name}


def perturb_lora_b(module: StableDiffusion, scale: float = 0.5) -> None:
    with torch.no_grad():
        for name, p in lora_params(module).items():
            if ".lora_B." in name:
                p.add_(scale * torch.randn_like(p))


class MeanBrightness(nn.Module):
    """A differentiable image reward: mean pixel value (B, 3, H, W) -> (B,)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------- loading
def test_missing_path_fails_when_configured_naming_it(tmp_path):
    module = StableDiffusion(pretrained_path=str(tmp_path / "nowhere"))  # builds without weights
    assert not module.loaded
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*unet/, vae/"):
        module.configure_model()


def test_incomplete_pipeline_names_the_missing_part(tmp_path, pipeline):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(pipeline, partial)
    shutil.rmtree(partial / "vae")
    with pytest.raises(FileNotFoundError, match=r"has no vae/ subfolder"):
        StableDiffusion(pretrained_path=str(partial)).configure_model()
    (partial / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match=r"vae.*has no config\.json"):
        StableDiffusion(pretrained_path=str(partial)).configure_model()


def test_loads_the_saved_pipeline(pipeline):
    from diffusers import DDIMScheduler, UNet2DConditionModel

    module = make_module(pipeline)
    saved = UNet2DConditionModel.from_pretrained(str(pipeline / "unet"))
    # every saved weight is in the module (LoRA wraps a projection's weight as base_layer)
    ours = {n.replace(".base_layer", ""): p for n, p in module.denoiser.unet.named_parameters()}
    for name, p in saved.named_parameters():
        assert torch.equal(ours[name], p), name
    assert module.data_shape == (4, 8, 8)  # 16-pixel images, VAE factor 2
    assert module.scaling_factor == pytest.approx(0.18215)
    scheduler = DDIMScheduler.from_pretrained(str(pipeline), subfolder="scheduler")
    assert torch.allclose(
        module.noise_schedule.alphas_cumprod, scheduler.alphas_cumprod.double(), rtol=0, atol=0
    )
    # SD's set_alpha_to_one=False: DDIM's last step goes to alphas_cumprod[0], not 1
    assert module.noise_schedule.final_alpha_cumprod == pytest.approx(
        float(scheduler.alphas_cumprod[0])
    )
    assert module.sampler.schedule is module.noise_schedule
    assert module.sampler.num_steps == STEPS


def test_resolution_must_fit_the_networks(pipeline):
    with pytest.raises(ValueError, match="resolution 18 must be a multiple of 4"):
        make_module(pipeline, resolution=18)
    assert make_module(pipeline, resolution=24).data_shape == (4, 12, 12)


# ---------------------------------------------------------------------------- LoRA
def test_lora_only_adapters_train(pipeline):
    module = make_module(pipeline, lora_rank=2)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(lora_params(module))
    # every attention projection of the UNet got an adapter, B initialised to zero
    lora_b = [p for name, p in lora_params(module).items() if ".lora_B." in name]
    attentions = [
        n for n, _ in module.denoiser.unet.named_modules() if n.endswith(("attn1", "attn2"))
    ]
    assert len(attentions) == 8  # self- and cross-attention in 4 transformer blocks
    assert len(lora_b) == 4 * len(attentions)  # to_q, to_k, to_v, to_out.0 in each
    assert all(p.shape[1] == 2 and not p.any() for p in lora_b)
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in lora_params(module).values()}


def test_checkpoint_holds_only_the_adapters_and_reloading_restores_them(pipeline, tmp_path):
    module = make_module(pipeline, lora_rank=2)
    perturb_lora_b(module)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["state_dict"]) == set(lora_params(module))
    assert "seiko_reference" not in checkpoint
    base_bytes = sum(p.numel() * 4 for name, p in module.named_parameters() if "lora_" not in name)
    saved_bytes = sum(t.numel() * t.element_size() for t in checkpoint["state_dict"].values())
    assert saved_bytes < base_bytes / 5

    reloaded = StableDiffusion.load_from_checkpoint(path)
    assert reloaded.lora_rank == 2 and reloaded.sampler.num_steps == STEPS
    theirs = dict(reloaded.named_parameters())
    for name, p in module.named_parameters():
        assert torch.equal(theirs[name], p), name  # adapters restored, base from the pipeline
    assert {n for n, p in reloaded.named_parameters() if p.requires_grad} == set(theirs) & set(
        lora_params(module)
    )


def test_a_checkpoint_that_does_not_fit_is_refused(pipeline):
    module = make_module(pipeline, lora_rank=2)
    state = {k: v for k, v in module.state_dict().items() if "lora_" in k}
    dropped = sorted(state)[0]
    with pytest.raises(RuntimeError, match="trainable weights missing.*lora"):
        module.load_state_dict({k: v for k, v in state.items() if k != dropped})
    with pytest.raises(RuntimeError, match=r"unexpected keys: \['denoiser.unet.nonsense'\]"):
        module.load_state_dict({**state, "denoiser.unet.nonsense": torch.zeros(1)})
    module.load_state_dict(state)  # exactly the adapters: fine


# ---------------------------------------------------------------------------- guidance
def test_cfg_scale_one_is_the_conditional_prediction(pipeline):
    module = make_module(pipeline, cfg_scale=1.0)
    cond = module.encode_prompts(["a cat", "dog"])
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([900, 20])
    with torch.no_grad():
        expected = module.denoiser.unet(x, t, encoder_hidden_states=cond).sample
        assert torch.equal(module.denoiser(x, t, cond), expected)


def test_cfg_scale_extrapolates_from_the_empty_prompt(pipeline):
    module = make_module(pipeline, cfg_scale=7.5)
    unet = module.denoiser.unet
    cond = module.encode_prompts(["a cat", "dog"])
    null = module.encode_prompts(["", ""])
    assert torch.equal(module.denoiser.null_embedding, null[:1])
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([900, 20])
    with torch.no_grad():
        conditional = unet(x, t, encoder_hidden_states=cond).sample
        unconditional = unet(x, t, encoder_hidden_states=null).sample
        guided = module.denoiser(x, t, cond)
    assert (conditional - unconditional).abs().max() > 1e-3  # the prompt matters
    expected = unconditional + 7.5 * (conditional - unconditional)
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-5)
    assert (guided - conditional).abs().max() > 1e-3


def test_cfg_denoiser_refuses_missing_or_misshapen_text():
    unet = nn.Identity()
    denoiser = ClassifierFreeGuidance(unet, torch.zeros(1, 12, 16), scale=2.0)
    with pytest.raises(ValueError, match="needs the prompts' text embeddings"):
        denoiser(torch.zeros(1, 4, 8, 8), torch.zeros(1, dtype=torch.long), None)
    with pytest.raises(ValueError, match=r"cond has shape \(1, 7, 16\); expected \(B, 12, 16\)"):
        denoiser(torch.zeros(1, 4, 8, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, 7, 16))
    with pytest.raises(ValueError, match="cfg_scale must be >= 0"):
        ClassifierFreeGuidance(unet, torch.zeros(1, 12, 16), scale=-1.0)


# ---------------------------------------------------------------------------- the KL reference
def test_reference_is_the_base_model_without_a_copy(pipeline):
    module = make_module(pipeline, lora_rank=2)
    n_params = sum(p.numel() for p in module.parameters())
    reference = module.snapshot_reference()
    assert isinstance(reference, AdapterDisabled) and reference.denoiser is module.denoiser
    assert sum(p.numel() for p in module.parameters()) == n_params
    flags = {name: p.requires_grad for name, p in module.named_parameters()}

    perturb_lora_b(module)
    cond = module.encode_prompts(["a cat", "dog"])
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([700, 300])
    with torch.no_grad():
        tuned = module.denoiser(x, t, cond)
        base = reference(x, t, cond)
        with adapters_disabled(module.denoiser.unet):
            expected = module.denoiser(x, t, cond)
    assert torch.equal(base, expected)
    assert (tuned - base).abs().max() > 1e-4  # the adapters act, and the reference ignores them
    assert {name: p.requires_grad for name, p in module.named_parameters()} == flags


def test_kl_is_zero_at_init_and_grows_with_the_adapters(pipeline):
    module = make_module(pipeline, lora_rank=2, sampler=SamplerConfig(num_steps=STEPS, eta=1.0))
    reference = module.snapshot_reference()
    cond = module.encode_prompts(["cat", "dog"])

    def chain_kl() -> torch.Tensor:
        torch.manual_seed(1)
        x_T = module.initial(2)
        return module.sampler(module.denoiser, x_T, cond=cond, reference=reference).kl

    assert chain_kl().abs().max() == 0  # LoRA's B starts at zero: the same model, exactly
    perturb_lora_b(module)
    assert (chain_kl() > 0).all()


# ---------------------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("kl_gradient", ["detached", "exact"])
def test_finetune_loss_gives_gradients_on_the_adapters_only(pipeline, kl_gradient):
    # "exact" runs the adapter-disabled reference inside the checkpointed step, recomputed
    # (and its adapters toggled) in the backward pass
    module = make_module(
        pipeline,
        lora_rank=2,
        reward=MeanBrightness,
        sampler=SamplerConfig(num_steps=STEPS, eta=1.0, checkpoint=True, kl_gradient=kl_gradient),
    )
    assert isinstance(module.reward, MeanBrightness)  # the factory ran at configure time
    module.snapshot_reference()
    perturb_lora_b(module, scale=0.05)  # so the KL and the gradients of A are not zero
    cond = module.encode_prompts(["cat", "a dog"])
    torch.manual_seed(3)
    terms = module.finetune_loss(2, cond)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["kl"] > 0
    terms["loss"].backward()
    grads = {name: p.grad for name, p in module.named_parameters() if p.grad is not None}

    # the same step without checkpointing (same noise): the same gradients
    module.zero_grad(set_to_none=True)
    module.sampler = dataclasses.replace(module.sampler, checkpoint=False)
    torch.manual_seed(3)
    module.finetune_loss(2, cond)["loss"].backward()
    for name, p in module.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-7)
    assert set(grads) == set(lora_params(module))
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert all(p.grad is None for p in module.vae.parameters())
    assert {n for n, p in module.named_parameters() if p.requires_grad} == set(grads)


def test_fast_dev_run_trains_the_adapters_and_nothing_else(pipeline, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\ncat\na dog\n")
    module = make_module(pipeline, lora_rank=2, reward=MeanBrightness, kl_weight=0.1)
    perturb_lora_b(module, scale=0.05)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False)
    trainer.fit(module, PromptDataModule(str(prompts), batch_size=2, samples_per_epoch=2))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert float(trainer.callback_metrics["train/kl"]) > 0
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(lora_params(module))


def test_a_batch_without_prompts_is_refused(pipeline):
    module = make_module(pipeline, reward=MeanBrightness)
    with pytest.raises(TypeError, match=r"batch is \{'prompt'.*got dict with keys \['x'\]"):
        module.training_step({"x": torch.zeros(2, 3)}, 0)
    with pytest.raises(TypeError, match="non-empty list of strings, got list"):
        module.training_step([], 0)


def test_full_finetuning_trains_the_unet_with_a_frozen_copy_as_reference(pipeline, tmp_path):
    module = make_module(pipeline, lora_rank=None)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in module.named_parameters() if n.startswith("denoiser.unet.")}
    reference = module.snapshot_reference()
    assert isinstance(reference, nn.Module) and reference is not module.denoiser
    assert not any(p.requires_grad for p in reference.parameters())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    checkpoint = torch.load(tmp_path / "full.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == trainable  # no VAE, no text encoder
    assert "seiko_reference" in checkpoint


def test_generate_gives_one_image_per_prompt(pipeline):
    module = make_module(pipeline)
    images = module.generate(["cat", "dog", "cat"], generator=torch.Generator().manual_seed(0))
    assert [image.size for image in images] == [(16, 16)] * 3
    assert {image.mode for image in images} == {"RGB"}
    again = module.generate(["cat", "dog", "cat"], generator=torch.Generator().manual_seed(0))
    assert [image.tobytes() for image in again] == [image.tobytes() for image in images]
    other = module.generate(["cat", "dog", "cat"], generator=torch.Generator().manual_seed(1))
    assert other[0].tobytes() != images[0].tobytes()
    with pytest.raises(ValueError, match=r"cond must be \(n=2, L, D\) prompt embeddings"):
        module.sample(2, cond=module.encode_prompts(["cat"]))
    with pytest.raises(RuntimeError, match="draws prompts, and there are none: set prompt_file"):
        module.sample(2)  # no prompt file, no datamodule


def test_reward_reads_decoded_pixels_with_gradient(pipeline):
    module = make_module(pipeline)
    x0 = torch.randn(2, 4, 8, 8, requires_grad=True)
    pixels = module.reward_input(x0)
    assert pixels.shape == (2, 3, 16, 16)
    assert 0 <= float(pixels.detach().min()) <= float(pixels.detach().max()) <= 1
    pixels.mean().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- precision
class RecordDtypes(L.Callback):
    def __init__(self) -> None:
        self.seen: list[dict[str, torch.dtype]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lora = next(p for n, p in pl_module.named_parameters() if "lora_" in n)
        base = pl_module.denoiser.unet.conv_in.weight
        self.seen.append(
            {
                "lora": lora.dtype,
                "unet_base": base.dtype,
                "vae": next(pl_module.vae.parameters()).dtype,
                "text_encoder": next(pl_module.text_encoder.parameters()).dtype,
                "loss": outputs["loss"].detach().float(),
            }
        )


def _bf16_fit(pipeline: Path, tmp_path: Path, accelerator: str, force: bool) -> RecordDtypes:
    from seiko.callbacks.precision import FrozenPrecision

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("cat\ndog\n")
    module = StableDiffusion(
        pretrained_path=str(pipeline),
        lora_rank=2,
        reward=MeanBrightness,
        sampler=SamplerConfig(num_steps=STEPS, eta=1.0),
    )
    record = RecordDtypes()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision="bf16-mixed",
        max_steps=2,
        callbacks=[FrozenPrecision(force=force), record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, PromptDataModule(str(prompts), batch_size=2, samples_per_epoch=4))
    assert len(record.seen) == 2
    for seen in record.seen:
        assert seen["lora"] == torch.float32
        assert seen["unet_base"] == seen["vae"] == seen["text_encoder"] == torch.bfloat16
        assert torch.isfinite(seen["loss"])
    return record


def test_bf16_fine_tuning_step_with_frozen_precision_on_cpu(pipeline, tmp_path):
    _bf16_fit(pipeline, tmp_path, "cpu", force=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_bf16_fine_tuning_step_with_frozen_precision(pipeline, tmp_path):
    _bf16_fit(pipeline, tmp_path, "gpu", force=False)


def test_reward_factory_is_not_called_before_configure(pipeline):
    calls = []
    factory = functools.partial(lambda: calls.append(1) or MeanBrightness())
    module = StableDiffusion(pretrained_path=str(pipeline), reward=factory)
    assert calls == [] and module.reward is None
    module.configure_model()
    module.configure_model()  # idempotent
    assert calls == [1] and isinstance(module.reward, MeanBrightness)
    assert "reward" not in module.hparams  # a Python object is no hyper-parameter


# ---------------------------------------------------------------------------- the configs
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "images"


def _fit_cli(config: str, tmp_path: Path, *extra: str) -> None:
    from seiko.cli import build_cli

    build_cli(
        [
            "fit",
            "--config",
            str(CONFIGS / config),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.accelerator",
            "cpu",
            "--trainer.precision",
            "32-true",
            "--trainer.fast_dev_run",
            "1",
            *extra,
        ]
    )


@pytest.mark.parametrize("config", ["sd_aesthetic.yaml", "sd_compressibility.yaml"])
def test_configs_fail_at_fit_naming_the_missing_weights(config, tmp_path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parents[1])
    missing = tmp_path / "no-sd-here"
    with pytest.raises(FileNotFoundError, match=rf"pretrained_path '{missing}' does not exist"):
        _fit_cli(config, tmp_path, "--model.init_args.pretrained_path", str(missing))


def _tiny_aesthetic_files(root: Path) -> tuple[Path, Path]:
    """A tiny random CLIP vision tower (16-pixel images) and an aesthetic head, saved as a user's
    local copies would be."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from seiko.oracles.images import AestheticHead

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=768,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    ).save_pretrained(root / "clip")
    torch.save(AestheticHead().state_dict(), root / "head.pth")
    return root / "clip", root / "head.pth"


def test_aesthetic_config_takes_a_fine_tuning_step(pipeline, tmp_path, monkeypatch):
    from seiko.cli import build_cli

    monkeypatch.chdir(CONFIGS.parents[1])
    clip, head = _tiny_aesthetic_files(tmp_path)
    reward = "--model.init_args.reward.init_args."
    cli = build_cli(
        [
            "--config",
            str(CONFIGS / "sd_aesthetic.yaml"),
            "--model.init_args.pretrained_path",
            str(pipeline),
            f"{reward}clip_path",
            str(clip),
            f"{reward}head_path",
            str(head),
            "--model.init_args.sampler.num_steps",
            "2",
            "--model.init_args.sampler.truncate",
            "2",
            "--data.init_args.batch_size",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.precision",
            "32-true",
            "--trainer.accumulate_grad_batches",
            "1",
            "--trainer.fast_dev_run",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    module = cli.model
    assert not module.loaded  # built from the config without touching the weights
    cli.trainer.fit(module, cli.datamodule)
    from seiko.oracles.images import AestheticScorer

    assert isinstance(module.reward, AestheticScorer)
    assert torch.isfinite(cli.trainer.callback_metrics["train/reward"])
    lora_b = [p for name, p in lora_params(module).items() if ".lora_B." in name]
    assert any(p.abs().sum() > 0 for p in lora_b)  # zero at init: the step moved them

    # a checkpoint of a CLI-built module reloads with its reward factory (LightningCLI's
    # instantiator rebuilds the class paths from the saved config)
    cli.trainer.save_checkpoint(tmp_path / "cli.ckpt")
    reloaded = StableDiffusion.load_from_checkpoint(tmp_path / "cli.ckpt")
    assert isinstance(reloaded.reward, AestheticScorer) and reloaded.sampler.num_steps == 2
    theirs = dict(reloaded.named_parameters())
    assert all(torch.equal(theirs[name], p) for name, p in lora_params(module).items())


# ---------------------------------------------------------------------------- the online loop
def _prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("# three prompts\ncat\na dog\ndog cat\n")
    return path


def _latent_module(pipeline: Path, tmp_path: Path, **kwargs) -> StableDiffusion:
    kwargs.setdefault("sampler", SamplerConfig(num_steps=2, eta=1.0))
    return make_module(pipeline, reward_space="latents", **kwargs)


def test_sample_without_cond_draws_prompts_reproducibly_from_the_generator(pipeline, tmp_path):
    prompts = _prompt_file(tmp_path)
    module = _latent_module(pipeline, tmp_path, prompt_file=str(prompts))
    assert module.sampling_prompts() == ["cat", "a dog", "dog cat"]

    def generator(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    drawn = module.draw_prompts(12, generator(0))
    assert drawn == module.draw_prompts(12, generator(0))
    assert drawn != module.draw_prompts(12, generator(1))
    assert set(drawn) == {"cat", "a dog", "dog cat"}  # uniform with replacement: all drawn
    x = module.sample(3, batch_size=2, generator=generator(0))
    assert x.shape == (3, 4, 8, 8) and torch.isfinite(x).all()
    assert torch.equal(x, module.sample(3, batch_size=2, generator=generator(0)))
    assert not torch.allclose(x, module.sample(3, batch_size=2, generator=generator(1)))
    # the prompts come first from the generator, then the chains run on their embeddings
    g = generator(0)
    chosen = module.draw_prompts(3, g)
    explicit = torch.cat(
        [
            module.sample(2, module.encode_prompts(chosen[:2]), generator=g),
            module.sample(1, module.encode_prompts(chosen[2:]), generator=g),
        ]
    )
    assert torch.equal(x, explicit)


def test_prompt_file_and_other_datamodule_prompts_are_refused_at_fit(pipeline, tmp_path):
    prompts = _prompt_file(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("cat\n")
    module = _latent_module(pipeline, tmp_path, prompt_file=str(prompts), reward=MeanBrightness)
    trainer = L.Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"prompt_file .* \(3 prompts\) and the datamodule's"):
        trainer.fit(module, PromptDataModule(str(other), batch_size=1, samples_per_epoch=1))


def test_design_keys_hold_the_images_and_encode_takes_keys_images_and_pixels(pipeline, tmp_path):
    from PIL import Image

    from seiko.lightning_modules.images import PNG_KEY_PREFIX, image_from_key

    module = _latent_module(pipeline, tmp_path, prompt_file=str(_prompt_file(tmp_path)))
    z = module.sample(3, generator=torch.Generator().manual_seed(0))
    images = module.decode(z)
    assert module.image_size == 16 and [im.size for im in images] == [(16, 16)] * 3
    keys = [module.design_key(image) for image in images]
    assert all(key.startswith(PNG_KEY_PREFIX) for key in keys) and len(set(keys)) == 3
    assert [image_from_key(k).tobytes() for k in keys] == [im.tobytes() for im in images]
    assert module.design_key(None) == ""

    latents = module.encode(keys)
    assert latents.shape == (3, 4, 8, 8) and latents.device.type == "cpu"
    # the VAE's posterior mean, scaled as decode_pixels unscales it
    pixels = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    pixels = pixels.float()
    with torch.no_grad():
        mean = module.vae.encode(pixels / 255 * 2 - 1).latent_dist.mean
    torch.testing.assert_close(latents, mean * module.scaling_factor, rtol=1e-5, atol=1e-6)
    uint8 = pixels.to(torch.uint8)
    for same in (images, list(uint8), list(uint8.float() / 255), keys[:1] + images[1:]):
        torch.testing.assert_close(module.encode(same, batch_size=2), latents, rtol=1e-5, atol=1e-6)
    assert module.encode([]).shape == (0, 4, 8, 8)

    # encode(decode(z)) is not z: the tiny VAE has random weights (measured, not bounded here)
    error = (latents - z).norm() / z.norm()
    assert torch.isfinite(error) and error > 0

    bad = [
        ("", r"design 0: '' is not an image key"),
        (PNG_KEY_PREFIX + "bm90IGEgcG5n", r"design 0: image key .* does not hold a PNG"),
        (Image.new("RGB", (8, 8)), r"design 0 is a 8x8 image; the model makes 16x16"),
        (torch.zeros(3, 8, 8), r"design 0 is a tensor of shape \(3, 8, 8\); .* \(3, 16, 16\)"),
        (torch.zeros(3, 16, 16, dtype=torch.long), "design 0 has dtype torch.int64"),
        (torch.full((3, 16, 16), float("nan")), "design 0 has NaN or infinite pixels"),
        (3, "design 0 is a int; expected a PIL image, an image key"),
    ]
    for design, message in bad:
        with pytest.raises(ValueError, match=message):
            module.encode([design])
    with pytest.raises(ValueError, match="design 2 is a NoneType"):
        module.encode(keys[:2] + [None])


def test_decode_gives_none_for_a_non_finite_sample(pipeline):
    module = make_module(pipeline)
    x = torch.randn(2, 4, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    first, second = module.decode(x)
    assert first is not None and first.size == (16, 16) and second is None
    assert module.design_key(second) == ""


def test_a_latent_reward_reads_x0_itself_and_trains_the_adapters(pipeline, tmp_path):
    module = _latent_module(pipeline, tmp_path, reward=MeanBrightness)  # mean latent value
    x0 = torch.randn(2, 4, 8, 8)
    assert module.reward_input(x0) is x0
    module.snapshot_reference()
    terms = module.finetune_loss(2, module.encode_prompts(["cat", "dog"]))
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    grads = [p.grad for p in lora_params(module).values()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in module.vae.parameters())


class CountingJPEG:
    """DDPO's compressibility oracle, recording every image it is asked to measure."""

    name = "jpeg_compressibility"
    higher_is_better = True

    def __init__(self) -> None:
        from seiko.oracles.images import JPEGCompressibility

        self.oracle = JPEGCompressibility()
        self.measured: list = []

    def measure(self, designs):
        self.measured += list(designs)
        return self.oracle.measure(designs)

    def __call__(self, designs):
        return self.measure(designs).values


def _online(oracle, store: Path, **kwargs):
    from seiko.callbacks import OnlineExploration, UCBBonus

    kwargs.setdefault("queries_per_round", [8, 8])
    return OnlineExploration(
        oracle,
        budget=kwargs.pop("budget", 16),
        bonus=UCBBonus(beta=1.0),
        reward_model={"epochs": 3, "batch_size": 8, "channels": 4, "hidden": 8},
        reference="pretrained",
        store_path=str(store),
        sample_batch_size=4,
        **kwargs,
    )


def _online_trainer(tmp_path: Path, max_epochs: int, callbacks: list) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.Checkpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_online_exploration_with_jpeg_compressibility_end_to_end(pipeline, tmp_path, monkeypatch):
    import seiko.callbacks.exploration as exploration_module
    from seiko.callbacks import UCBReward
    from seiko.lightning_modules.images import PNG_KEY_PREFIX, image_from_key
    from seiko.oracles.images import JPEGCompressibility
    from seiko.oracles.store import FeedbackStore

    fitted: list[torch.Tensor] = []  # what the reward model is fitted on, each round
    fit = exploration_module.fit_ensemble
    monkeypatch.setattr(
        exploration_module,
        "fit_ensemble",
        lambda ensemble, x, y, **kw: fitted.append(x.clone()) or fit(ensemble, x, y, **kw),
    )
    module = _latent_module(pipeline, tmp_path, kl_weight=0.1)  # prompts from the datamodule
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    oracle = CountingJPEG()
    exploration = _online(oracle, tmp_path / "feedback.sqlite")
    trainer = _online_trainer(tmp_path, max_epochs=2, callbacks=[exploration])
    data = PromptDataModule(str(_prompt_file(tmp_path)), batch_size=2, samples_per_epoch=2)
    trainer.fit(module, data)

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    keys, values = store.designs_and_values()
    assert store.spent() == 16 and store.rounds() == [0, 1] and len(set(keys)) == 16
    assert len(oracle.measured) == 16  # the budget, each design paid once
    assert all(key.startswith(PNG_KEY_PREFIX) for key in keys)
    images = [image_from_key(key) for key in keys]
    assert all(image.size == (16, 16) and image.mode == "RGB" for image in images)
    # real oracle rows: minus the JPEG size in kB of exactly the stored images
    torch.testing.assert_close(values, JPEGCompressibility()(images), rtol=0, atol=0)
    assert (values < 0).all()
    assert [x.shape for x in fitted] == [(8, 4, 8, 8), (16, 4, 8, 8)]
    # the reward model is fitted on the VAE latents of the stored images, in store order
    torch.testing.assert_close(fitted[-1], module.encode(keys), rtol=0, atol=0)
    assert exploration.ensemble.input_shape == (4, 8, 8)
    assert isinstance(module.reward, UCBReward)
    assert module.reward(module.encode(keys)).shape == (16,)
    assert torch.isfinite(trainer.callback_metrics["train/reward"])
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(lora_params(module))  # adapters moved, base untouched
    assert any(".lora_B." in name for name in changed)


class CrashAtEpoch(L.Callback):
    """Fails at the start of ``epoch`` (after the callbacks before it in the list ran)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("killed after the oracle answered")


def test_resuming_from_a_checkpoint_pays_no_query_twice(pipeline, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from seiko.oracles.store import FeedbackStore

    data = PromptDataModule(str(_prompt_file(tmp_path)), batch_size=2, samples_per_epoch=2)
    store_path = tmp_path / "feedback.sqlite"
    checkpoints = tmp_path / "checkpoints"
    # run 1: round 0 trained and checkpointed; round 1 paid, then the run dies before training
    first = CountingJPEG()
    run = _online_trainer(
        tmp_path,
        max_epochs=3,
        callbacks=[
            _online(first, store_path, budget=24, queries_per_round=[8, 8, 8]),
            CrashAtEpoch(1),
            ModelCheckpoint(dirpath=checkpoints, save_last=True),
        ],
    )
    with pytest.raises(RuntimeError, match="killed after the oracle answered"):
        run.fit(_latent_module(pipeline, tmp_path), data)
    assert len(first.measured) == 16
    assert FeedbackStore(store_path).rounds() == [0, 1]

    # run 2 resumes from the checkpoint of round 0: round 1 is re-entered and costs nothing
    second = CountingJPEG()
    module = _latent_module(pipeline, tmp_path)
    exploration = _online(second, store_path, budget=24, queries_per_round=[8, 8, 8])
    resumed = _online_trainer(tmp_path, max_epochs=3, callbacks=[exploration])
    resumed.fit(module, data, ckpt_path=str(checkpoints / "last.ckpt"))
    store = FeedbackStore(store_path)
    keys, _ = store.designs_and_values()
    assert len(second.measured) == 8  # round 2 only
    assert store.spent() == 24 and store.rounds() == [0, 1, 2] and len(set(keys)) == 24
    assert [h["round"] for h in exploration.history] == [0.0, 1.0, 2.0]  # round 0 restored
    assert set(exploration.history[1]) >= {"reward_model/val_spearman"}  # refitted, not re-paid
    assert "feedback/draws" not in exploration.history[1]  # no sampling for round 1's queries


def test_the_online_loop_refuses_a_pixel_reward_before_any_query(pipeline, tmp_path, monkeypatch):
    import yaml

    from seiko.oracles.store import FeedbackStore

    monkeypatch.chdir(CONFIGS.parents[1])
    config = yaml.safe_load((CONFIGS / "sd_compressibility.yaml").read_text())
    config["model"]["init_args"]["reward_space"] = "pixels"
    config["trainer"]["callbacks"][-1]["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    pixels = tmp_path / "sd_pixels.yaml"
    pixels.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="OnlineExploration fits its reward model on encode"):
        _fit_cli(str(pixels), tmp_path, "--model.init_args.pretrained_path", str(pipeline))
    store = FeedbackStore(str(tmp_path / "feedback.sqlite"))  # made by the callback's setup
    assert len(store) == 0 and store.spent() == 0


def test_the_online_loop_refuses_the_previous_reference_with_lora(pipeline, tmp_path):
    from seiko.oracles.store import FeedbackStore

    exploration = _online(CountingJPEG(), tmp_path / "feedback.sqlite")
    exploration.reference = "previous"
    trainer = _online_trainer(tmp_path, max_epochs=1, callbacks=[exploration])
    data = PromptDataModule(str(_prompt_file(tmp_path)), batch_size=2, samples_per_epoch=2)
    with pytest.raises(ValueError, match="reference='previous'.*set the callback's reference="):
        trainer.fit(_latent_module(pipeline, tmp_path), data)
    assert FeedbackStore(tmp_path / "feedback.sqlite").spent() == 0


def test_compressibility_config_runs_two_rounds_on_the_tiny_pipeline(pipeline, tmp_path):
    import yaml

    from seiko.cli import build_cli
    from seiko.oracles.store import FeedbackStore

    config = yaml.safe_load((CONFIGS / "sd_compressibility.yaml").read_text())
    online = config["trainer"]["callbacks"][0]["init_args"]
    online.update(budget=8, queries_per_round=[4, 4], sample_batch_size=4)
    online["reward_model"].update(epochs=2, batch_size=4)
    config["trainer"]["callbacks"][-1]["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    prompts = CONFIGS.parents[1] / "data" / "prompts"
    config["data"]["init_args"]["train_file"] = str(prompts / "simple_animals.txt")
    config["data"]["init_args"]["predict_file"] = str(prompts / "eval_simple_animals.txt")
    small = tmp_path / "sd_small.yaml"
    small.write_text(yaml.safe_dump(config))
    cli = build_cli(
        [
            "--config",
            str(small),
            "--model.init_args.pretrained_path",
            str(pipeline),
            "--model.init_args.sampler.num_steps",
            "2",
            "--model.init_args.sampler.truncate",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.precision",
            "32-true",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "1",
            "--trainer.accumulate_grad_batches",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    assert not cli.model.loaded and cli.model.reward_space == "latents"
    cli.trainer.fit(cli.model, cli.datamodule)
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    assert store.spent() == 8 and store.rounds() == [0, 1]
    assert store.oracles() == ["jpeg_compressibility"]
    assert torch.isfinite(cli.trainer.callback_metrics["train/reward"])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_online_ppo_rescores_each_chain_with_the_prompts_it_was_sampled_with(pipeline, tmp_path):
    from seiko.callbacks import OnlinePPO
    from seiko.oracles.store import FeedbackStore

    class CheckRescoring(L.Callback):
        """Right after OnlinePPO sampled an update: its log-probs recomputed with the batch's
        cond are the sampling model's; with the prompts shuffled between chains they are not."""

        def __init__(self) -> None:
            self.checked = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            ppo = pl_module.ppo_batch
            if trainer.global_step % 2 or ppo is None:
                return
            with torch.no_grad():
                log_probs, _ = pl_module.sampler.log_prob(
                    pl_module.denoiser, ppo["trajectory"], cond=ppo["cond"]
                )
                swapped, _ = pl_module.sampler.log_prob(
                    pl_module.denoiser, ppo["trajectory"], cond=ppo["cond"].roll(1, 0)
                )
            assert ppo["cond"].shape == (4, MAX_LENGTH, 16)
            torch.testing.assert_close(log_probs, ppo["old_log_probs"], rtol=1e-5, atol=1e-4)
            assert (swapped - ppo["old_log_probs"]).abs().max() > 1e-3
            self.checked += 1

    module = make_module(
        pipeline,
        mode="ppo",
        kl_weight=0.1,
        prompt_file=str(_prompt_file(tmp_path)),
        sampler=SamplerConfig(num_steps=2, eta=1.0),
    )
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    oracle = CountingJPEG()
    check = CheckRescoring()
    ppo = OnlinePPO(oracle, budget=8, samples_per_update=4, ppo_epochs=2, clip_range=0.2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        callbacks=[ppo, check],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, PromptDataModule(str(_prompt_file(tmp_path)), batch_size=1))
    assert check.checked == 2  # two updates of 4 chains, two optimizer steps each
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    assert store.spent() == 8 == len(oracle.measured) and store.rounds() == [0, 1]
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(lora_params(module))

"""ImageDiffusion with a tiny diffusers UNet: pretraining, sampling, PIL designs and their store
keys, fine-tuning on a differentiable reward, the online loop with its image grids, and the CLI."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from seiko.callbacks import FeedbackReport, OnlineExploration, UCBBonus
from seiko.cli import build_cli
from seiko.datamodules.images import ImageDataModule
from seiko.lightning_modules import SamplerConfig, ScheduleConfig
from seiko.lightning_modules.images import (
    PNG_KEY_PREFIX,
    ImageDiffusion,
    UNetDenoiser,
    image_from_key,
    image_key,
)
from seiko.oracles import FunctionOracle
from seiko.oracles.store import FeedbackStore

MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist_5k.csv.gz"
DIGITS = [str(k) for k in range(10)]


def tiny_unet(num_classes: int | None = None, channels: int = 1) -> UNetDenoiser:
    torch.manual_seed(0)
    return UNetDenoiser(
        sample_size=28,
        in_channels=channels,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        add_attention=False,
        num_classes=num_classes,
    )


def tiny(num_classes: int | None = None, **kwargs) -> ImageDiffusion:
    kwargs.setdefault("schedule", ScheduleConfig(num_train_timesteps=50))
    kwargs.setdefault("sampler", SamplerConfig(num_steps=3))
    channels = kwargs.pop("channels", 1)
    return ImageDiffusion(tiny_unet(num_classes, channels), **kwargs)


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory) -> Path:
    """40 real MNIST digits, 4 of each class (the shipped file is sorted by digit, 500 each)."""
    with gzip.open(MNIST, "rt", encoding="utf-8") as handle:
        lines = [line for n, line in enumerate(handle) if n % 500 < 4]
    path = tmp_path_factory.mktemp("mnist") / "digits.csv"
    path.write_text("".join(lines))
    return path


def brightness(image: Image.Image) -> float:
    """The cheap oracle of the loop test: the mean pixel value in [0, 1]."""
    return float(np.asarray(image, dtype=np.float64).mean() / 255)


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    kwargs.setdefault("logger", False)
    return L.Trainer(
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


# ---------------------------------------------------------------------- the denoiser
def test_unet_denoiser_shapes_and_the_null_class():
    unet = tiny_unet(num_classes=10)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 10, 49])
    out = unet(x, t, torch.tensor([1, 2, 3]))
    assert out.shape == (3, 1, 28, 28) and torch.isfinite(out).all()
    null = unet(x, t, None)
    assert torch.equal(null, unet(x, t, torch.full((3,), -1)))  # -1 and None: the null class
    assert not torch.allclose(null, out)
    assert unet.unet.class_embedding.num_embeddings == 11
    plain = tiny_unet()
    assert plain.image_shape == (1, 28, 28) and plain(x, t).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 28, 28\), got"):
        plain(torch.randn(2, 1, 32, 32), t[:2])


def test_unet_denoiser_checks_its_arguments():
    with pytest.raises(ValueError, match=r"sample_size=28 is not divisible by 2 \*\* \(levels - 1"):
        UNetDenoiser(28, block_out_channels=(8, 8, 8, 8), norm_num_groups=4)
    with pytest.raises(ValueError, match="norm_num_groups=8 does not divide"):
        UNetDenoiser(28, block_out_channels=(12, 16))
    with pytest.raises(ValueError, match=r"in_channels=2 is not one of \(1, 3\)"):
        UNetDenoiser(28, in_channels=2)
    with pytest.raises(ValueError, match="one entry per level"):
        UNetDenoiser(28, block_out_channels=(8, 16), norm_num_groups=4, up_block_types=("x",))


def test_image_diffusion_checks_its_denoiser_and_labels():
    with pytest.raises(ValueError, match="needs a denoiser with an image_shape"):
        ImageDiffusion(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"num_classes=None but labels=\['a', 'b'\]"):
        tiny(labels=["a", "b"])
    with pytest.raises(ValueError, match=r"target_label '7' is not one of labels"):
        tiny(num_classes=2, labels=["0", "1"], target_label="7")
    with pytest.raises(ValueError, match="is unconditional"):
        tiny().label_ids(["3"])


# ---------------------------------------------------------------------- pretraining
def test_pretraining_on_mnist_and_the_checkpoint_keeps_the_labels(digits_csv, tmp_path):
    data = ImageDataModule(str(digits_csv), class_labels=True, batch_size=8)
    model = tiny(num_classes=data.num_classes, labels=data.labels, cond_dropout=0.2)
    before = [p.detach().clone() for p in model.denoiser.parameters()]
    fit = trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=CSVLogger(tmp_path),
    )
    fit.fit(model, datamodule=data)
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.denoiser.parameters(), strict=True)
    )
    assert math.isfinite(float(fit.callback_metrics["val/loss"]))
    path = tmp_path / "mnist.ckpt"
    fit.save_checkpoint(path)
    restored = ImageDiffusion.load_from_checkpoint(path, denoiser=tiny_unet(num_classes=10))
    assert restored.labels == DIGITS and restored.label_ids(["7"]).tolist() == [7]
    for a, b in zip(model.denoiser.parameters(), restored.denoiser.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_datamodule_of_another_image_size_is_refused(digits_csv, tmp_path):
    data = ImageDataModule(str(digits_csv), image_size=32, batch_size=8)
    with pytest.raises(ValueError, match=r"images of shape \(1, 32, 32\) but the denoiser makes"):
        trainer(tmp_path, fast_dev_run=True).fit(tiny(), datamodule=data)


# ---------------------------------------------------------------------- sampling and designs
def test_sampling_shapes_and_decoding_to_pil():
    model = tiny(num_classes=10, labels=DIGITS)
    x = model.sample(5, batch_size=2)
    assert x.shape == (5, 1, 28, 28) and torch.isfinite(x).all()
    images = model.decode(x)
    assert len(images) == 5 and all(i.mode == "L" and i.size == (28, 28) for i in images)
    # decoding is the oracles' quantisation: clamp to [-1, 1], round(255 * (x + 1) / 2)
    expected = ((x[0, 0].clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    assert np.asarray(images[0]).tolist() == expected.tolist()
    x[1, 0, 3, 4] = math.nan
    assert model.decode(x)[1] is None and model.design_key(None) == ""

    target = tiny(num_classes=10, labels=DIGITS, target_label="3")
    same = target.sample(2, generator=torch.Generator().manual_seed(1))
    cond = target.label_ids(["3", "3"])
    explicit = target.sample(2, cond=cond, generator=torch.Generator().manual_seed(1))
    null = model.sample(2, generator=torch.Generator().manual_seed(1))  # same weights, null class
    assert torch.equal(same, explicit) and not torch.allclose(same, null)

    rgb = tiny(channels=3)
    images = rgb.decode(rgb.sample(2))
    assert rgb.data_shape == (3, 28, 28) and all(i.mode == "RGB" for i in images)


def test_encode_decode_and_design_keys_round_trip(digits_csv):
    data = ImageDataModule(str(digits_csv), val_fraction=0.0)
    pixels = data.images()[:6]  # (6, 1, 28, 28) uint8 real digits
    pil = [Image.fromarray(p[0].numpy()) for p in pixels]
    model = tiny()
    x = model.encode(pil)
    assert x.shape == (6, 1, 28, 28) and x.min() == -1 and x.max() == 1
    assert torch.equal(x, pixels.float() / 127.5 - 1)  # as the datamodule's batches
    assert torch.equal(model.encode(list(pixels)), x)  # uint8 tensors
    assert torch.equal(model.encode(list(x)), x)  # model-space tensors
    assert [np.asarray(i).tolist() for i in model.decode(x)] == [p[0].tolist() for p in pixels]

    keys = [model.design_key(image) for image in pil]
    assert all(k.startswith(PNG_KEY_PREFIX) and len(k) < 1000 for k in keys)
    assert len(set(keys)) == 6 and keys[0] == model.design_key(pil[0].copy())  # stable
    assert keys == [image_key(image) for image in model.decode(x)]
    assert torch.equal(model.encode(keys), x)  # the key holds the image itself
    assert image_from_key(keys[2]).tobytes() == pil[2].tobytes()
    assert model.design_key(x[0]) == keys[0]  # a model-space tensor has the same key

    with pytest.raises(ValueError, match=r"design 1 is a 32x32 image; the model makes 28x28"):
        model.encode([pil[0], pil[0].resize((32, 32))])
    with pytest.raises(ValueError, match=r"design 0: '' is not an image key"):
        model.encode([""])
    with pytest.raises(ValueError, match=r"design 0: image key .* does not hold a PNG image"):
        model.encode([PNG_KEY_PREFIX + "bm90IGEgUE5H"])
    with pytest.raises(ValueError, match=r"design 0 is a tensor of shape \(28, 28\)"):
        model.encode([x[0, 0]])
    with pytest.raises(ValueError, match="design 0 is a int; expected a PIL image"):
        model.encode([3])


# ---------------------------------------------------------------------- fine-tuning
def test_finetuning_on_a_differentiable_reward_raises_it(tmp_path):
    """AlignProp/DRaFT style, no callback: the reward (mean pixel value) goes up."""
    adam = lambda params: torch.optim.Adam(params, lr=0.02)  # noqa: E731
    model = tiny(mode="finetune", kl_weight=0.0, optimizer=adam)
    model.reward = lambda x0: x0.mean(dim=(1, 2, 3))

    def mean_sample_brightness() -> float:
        return float(model.sample(16, generator=torch.Generator().manual_seed(3)).mean())

    before = mean_sample_brightness()
    fit = trainer(tmp_path, max_steps=6)
    fit.fit(model, train_dataloaders=torch.utils.data.DataLoader(torch.zeros(48, 1), batch_size=8))
    after = mean_sample_brightness()
    assert after > before + 0.1, (before, after)
    assert math.isfinite(float(fit.callback_metrics["train/reward"]))


def test_finetuning_chains_are_what_sample_draws_whatever_the_batch_labels():
    chains = []

    def reward(x0: torch.Tensor) -> torch.Tensor:
        chains.append(x0.detach())
        return x0.mean(dim=(1, 2, 3))

    for target_label, cond in ((None, torch.tensor([1, 2, 3])), (None, None), ("3", None)):
        model = tiny(num_classes=10, labels=DIGITS, target_label=target_label, mode="finetune")
        model.reward = reward
        torch.manual_seed(5)
        model.finetune_loss(3, cond)
    assert torch.equal(chains[0], chains[1])  # the batch's labels are ignored: the null class
    assert not torch.allclose(chains[1], chains[2])  # the target class is used


# ---------------------------------------------------------------------- the online loop
def test_two_rounds_of_the_online_loop_store_images_and_draw_their_grids(tmp_path):
    model = tiny(mode="finetune", kl_weight=0.01)
    exploration = OnlineExploration(
        FunctionOracle(brightness),
        budget=16,
        queries_per_round=[8, 8],
        bonus=UCBBonus(beta=1.0),
        reward_model={"epochs": 3},
        sample_batch_size=8,
    )
    report = FeedbackReport()
    fit = trainer(tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[exploration, report])
    fit.fit(model, train_dataloaders=torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=4))

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    keys, values = store.designs_and_values()
    assert store.spent() == 16 and store.rounds() == [0, 1] and len(set(keys)) == 16
    images = [image_from_key(key) for key in keys]
    assert all(image.mode == "L" and image.size == (28, 28) for image in images)
    # the oracle measured exactly the images the keys hold
    assert torch.allclose(
        values, torch.tensor([brightness(i) for i in images], dtype=torch.float64)
    )
    assert [h["round"] for h in exploration.history] == [0.0, 1.0]
    assert exploration.ensemble.input_shape == (1, 28, 28)

    for name in ("round_0_designs.png", "round_1_designs.png", "top_designs.png"):
        assert (tmp_path / name).is_file(), name
    assert report.paths["designs"] == tmp_path / "top_designs.png"
    grid = Image.open(tmp_path / "round_1_designs.png")
    # 8 cells of 3 x 28 pixels in a row; a title line and one row of images with captions
    assert grid.size == (8 * 84, 18 + 84 + 14)
    best = int(np.nanargmax(values.numpy()))  # the best design is the top grid's first cell
    top = np.asarray(Image.open(tmp_path / "top_designs.png").convert("L"))
    assert top[:84:3, :84:3].tolist() == np.asarray(images[best]).tolist()


# ---------------------------------------------------------------------- the CLI
def test_seiko_fit_links_the_labels_and_classes(digits_csv, tmp_path):
    cli = build_cli(
        [
            "fit",
            "--model=seiko.lightning_modules.images.ImageDiffusion",
            "--model.denoiser=seiko.lightning_modules.images.UNetDenoiser",
            "--model.denoiser.block_out_channels=[8, 16]",
            "--model.denoiser.norm_num_groups=4",
            "--model.schedule.num_train_timesteps=50",
            "--data=seiko.datamodules.images.ImageDataModule",
            f"--data.path={digits_csv}",
            "--data.class_labels=true",
            "--data.batch_size=8",
            "--trainer.fast_dev_run=true",
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.labels == DIGITS == cli.datamodule.labels
    assert cli.model.denoiser.num_classes == 10 and cli.trainer.global_step == 1


# ---------------------------------------------------------------------- the shipped prior
@pytest.mark.slow
def test_the_shipped_prior_draws_digits_the_classifier_recognises():
    """models/images/mnist_prior.ckpt (configs/images/mnist_pretrain.yaml): measured 0.72-0.76
    of its class-conditional samples classified as the class asked for (docs/images.md)."""
    from seiko.oracles.digits import DigitConfidence

    root = Path(__file__).resolve().parents[2]
    model = ImageDiffusion.load_from_checkpoint(root / "models/images/mnist_prior.ckpt")
    assert model.labels == DIGITS and model.data_shape == (1, 28, 28)
    cond = torch.arange(10).repeat_interleave(6)
    images = model.decode(model.sample(60, cond=cond, generator=torch.Generator().manual_seed(0)))
    oracle = DigitConfidence(target=0, weights=str(root / "models/images/digit_classifier.pt"))
    predicted = oracle.probabilities(images).argmax(-1)
    assert float((predicted == cond).double().mean()) >= 0.6

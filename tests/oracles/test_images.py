"""Image oracles: JPEG (in)compressibility and the LAION aesthetic predictor (tiny CLIP in code)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from seiko.callbacks.precision import FrozenPrecision
from seiko.oracles import Oracle
from seiko.oracles.images import (
    AestheticHead,
    AestheticOracle,
    AestheticScorer,
    JPEGCompressibility,
    JPEGIncompressibility,
    load_aesthetic_head,
    load_clip_vision,
    to_pil,
)

SIDE = 32  # the tiny CLIP's input side


def noise_image(seed: int = 0, size: tuple[int, int] = (40, 48)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def pillow_kb(image: Image.Image, quality: int = 95) -> float:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return len(buffer.getvalue()) / 1000


def as_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a (C, H, W) uint8 tensor."""
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    return pixels.reshape(image.height, image.width, channels).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------- JPEG
def test_values_are_pillows_jpeg_byte_count_in_kb():
    image = noise_image()
    size = pillow_kb(image)
    assert size > 1  # a noise image does not compress: several kB
    assert JPEGIncompressibility()([image]).tolist() == [size]
    assert JPEGCompressibility()([image]).tolist() == [-size]
    assert JPEGIncompressibility(quality=50)([image]).item() == pillow_kb(image, 50) < size


def test_a_flat_grey_image_is_more_compressible_than_noise():
    grey = Image.new("RGB", (40, 48), (128, 128, 128))
    values = JPEGCompressibility()([grey, noise_image()])
    assert values.dtype == torch.float64 and values.shape == (2,)
    assert values[0] > values[1]
    assert (JPEGIncompressibility()([grey, noise_image()]) == -values).all()


def test_tensor_designs_give_the_value_of_the_same_image():
    image = noise_image()
    u8 = as_tensor(image)
    oracle = JPEGIncompressibility()
    expected = oracle([image]).item()
    assert oracle([u8]).item() == expected
    assert oracle([u8.float() / 255]).item() == expected
    symmetric = JPEGIncompressibility(value_range="symmetric")
    assert symmetric([u8.double() / 127.5 - 1]).item() == expected
    grey = image.convert("L")
    assert oracle([as_tensor(grey)]).item() == oracle([grey]).item() == pillow_kb(grey)


def test_float_pixels_are_clamped_then_rounded_like_ddpo():
    pixels = torch.rand(3, 16, 16)
    overshoot = pixels.clone()
    overshoot[0, :4] = 1.3
    overshoot[1, :4] = -0.2
    clamped = overshoot.clamp(0, 1)
    assert to_pil(overshoot).tobytes() == to_pil(clamped).tobytes()
    expected = (clamped * 255).round().to(torch.uint8)
    assert torch.equal(as_tensor(to_pil(clamped)), expected)


def test_bad_designs_are_nan_with_their_reason_and_the_others_are_scored():
    good = noise_image()
    nan_pixels = torch.rand(3, 8, 8)
    nan_pixels[0, 0, 0] = math.nan
    designs = [
        good,
        nan_pixels,
        torch.rand(2, 8, 8),  # two channels
        torch.rand(8, 8),  # no channel dimension
        torch.rand(1, 3, 8, 8),  # a batch, not a design
        torch.zeros(3, 8, 8, dtype=torch.long),
        "not an image",
        None,
        noise_image(seed=1),
    ]
    measurement = JPEGIncompressibility().measure(designs)
    values = measurement.values
    assert values[0].item() == pillow_kb(good)
    assert values[-1].item() == pillow_kb(noise_image(seed=1))
    assert torch.isnan(values[1:-1]).all()
    errors = measurement.errors
    assert errors[0] is None and errors[-1] is None
    assert "1 NaN or infinite pixels" in errors[1]
    assert all("expected (C, H, W) with C in (1, 3)" in e for e in errors[2:5])
    assert "dtype torch.int64" in errors[5]
    assert all("PIL image or a (C, H, W) tensor, got a" in e for e in errors[6:8])


def test_images_jpeg_cannot_store_are_saved_as_rgb():
    rgb = noise_image()
    rgba = rgb.copy()
    rgba.putalpha(200)
    palette = rgb.convert("P")
    values = JPEGIncompressibility()([rgba, palette])
    assert values[0].item() == pillow_kb(rgb)  # the alpha channel is dropped
    assert values[1].item() == pillow_kb(palette.convert("RGB"))


def test_jpeg_settings_and_protocol():
    with pytest.raises(ValueError, match="quality must be in"):
        JPEGCompressibility(quality=0)
    with pytest.raises(ValueError, match="quality must be in"):
        JPEGIncompressibility(quality=101)
    with pytest.raises(ValueError, match="value_range='0-1' is not one of"):
        JPEGIncompressibility(value_range="0-1")
    for oracle, name in [
        (JPEGCompressibility(), "jpeg_compressibility"),
        (JPEGIncompressibility(), "jpeg_incompressibility"),
    ]:
        assert isinstance(oracle, Oracle)
        assert oracle.name == name and oracle.higher_is_better
        assert oracle([]).shape == (0,)


# ---------------------------------------------------------------------- the aesthetic predictor
@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny random CLIP vision model with projection and its processor saved as a user's local
    copy would be, and an aesthetic head saved as .pth and .safetensors."""
    from safetensors.torch import save_file
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=SIDE,
        patch_size=8,
        projection_dim=768,  # the published head's input width
    )
    model = CLIPVisionModelWithProjection(config).eval()
    model.save_pretrained(root / "clip")
    processor = CLIPImageProcessor(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    )
    processor.save_pretrained(root / "clip")
    # a full CLIPModel (text tower too), as a local copy of openai/clip-vit-large-patch14 is;
    # the vision sub-config does not state the projection width (only the top level does)
    vision = {k: v for k, v in config.to_dict().items() if k != "projection_dim"}
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    full_config = CLIPConfig(
        text_config=text | dict(vocab_size=49408, max_position_embeddings=16),
        vision_config=vision,
        projection_dim=768,
    )
    full = CLIPModel(full_config).eval()
    full.save_pretrained(root / "full_clip")
    processor.save_pretrained(root / "full_clip")
    head = AestheticHead()
    torch.save(head.state_dict(), root / "head.pth")
    save_file(head.state_dict(), str(root / "head.safetensors"))
    torch.save(AestheticHead(input_size=16).state_dict(), root / "head16.pth")
    return {
        "clip": root / "clip",
        "pth": root / "head.pth",
        "safetensors": root / "head.safetensors",
        "head16": root / "head16.pth",
        "full_clip": root / "full_clip",
        "model": model,
        "full_model": full,
        "head": head,
    }


def test_the_head_has_the_published_layout():
    head = AestheticHead()
    assert [type(m).__name__ for m in head.layers] == [
        "Linear",
        "Dropout",
        "Linear",
        "Dropout",
        "Linear",
        "Dropout",
        "Linear",
        "Linear",
    ]
    linears = [(m.in_features, m.out_features) for m in head.layers if isinstance(m, nn.Linear)]
    assert linears == [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    assert [m.p for m in head.layers if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.1]
    assert list(head.state_dict()) == [
        f"layers.{i}.{kind}" for i in (0, 2, 4, 6, 7) for kind in ("weight", "bias")
    ]
    assert head(torch.randn(5, 768)).shape == (5,)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_a_saved_head_reloads_with_identical_outputs(clip_files, kind):
    loaded = load_aesthetic_head(clip_files[kind])
    embeddings = torch.randn(6, 768)
    with torch.no_grad():
        assert torch.equal(loaded(embeddings), clip_files["head"].eval()(embeddings))
    assert not loaded.training


def test_missing_or_wrong_files_are_clear_errors(clip_files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'/nowhere/head.pth' do not exist.*\.pth or"):
        load_aesthetic_head("/nowhere/head.pth")
    with pytest.raises(ValueError, match=r"is not the weights of an AestheticHead\(input_size=768"):
        load_aesthetic_head(clip_files["head16"])
    with pytest.raises(FileNotFoundError, match=r"'/nowhere/clip' does not exist.*save_pretrained"):
        load_clip_vision("/nowhere/clip")
    (tmp_path / "config.json").write_text((clip_files["clip"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has no preprocessor_config.json"):
        AestheticOracle(str(tmp_path), str(clip_files["pth"]))
    with pytest.raises(ValueError, match="value_range='bad'"):
        AestheticScorer(str(clip_files["clip"]), str(clip_files["pth"]), value_range="bad")


def test_the_score_is_the_head_on_the_normalised_clip_embedding(clip_files):
    scorer = AestheticScorer(str(clip_files["clip"]), str(clip_files["pth"]))
    assert all(not p.requires_grad for p in scorer.parameters())
    scorer.train()
    assert not scorer.training and not scorer.head.training  # frozen: stays in eval mode
    pixels = torch.randn(4, 3, SIDE, SIDE)
    with torch.no_grad():
        embeddings = clip_files["model"](pixel_values=pixels).image_embeds
        expected = clip_files["head"](embeddings / embeddings.norm(dim=-1, keepdim=True))
        assert torch.allclose(scorer.embed(pixels).norm(dim=-1), torch.ones(4))
        torch.testing.assert_close(scorer.score_pixel_values(pixels), expected)


def test_a_full_clip_model_directory_loads_its_vision_tower(clip_files):
    scorer = AestheticScorer(str(clip_files["full_clip"]), str(clip_files["pth"]))
    assert scorer.clip.config.projection_dim == 768
    full = clip_files["full_model"]
    pixels = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        pooled = full.vision_model(pixel_values=pixels).pooler_output
        expected = full.visual_projection(pooled)
        expected = expected / expected.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(scorer.embed(pixels), expected)


def test_the_oracle_scores_images_and_gives_nan_for_bad_designs(clip_files):
    oracle = AestheticOracle(str(clip_files["clip"]), str(clip_files["pth"]), batch_size=2)
    assert isinstance(oracle, Oracle) and oracle.name == "laion_aesthetic"
    images = [noise_image(seed) for seed in range(3)]
    bad = torch.full((3, 8, 8), math.nan)
    measurement = oracle.measure([images[0], bad, as_tensor(images[1]), images[2]])
    values = measurement.values
    assert values.dtype == torch.float64 and values.shape == (4,)
    assert math.isnan(values[1]) and "NaN or infinite" in measurement.errors[1]
    alone = torch.cat([oracle([image]) for image in images])  # one image per batch
    torch.testing.assert_close(values[[0, 2, 3]], alone)
    processor = oracle.scorer.processor
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        direct = oracle.scorer.score_pixel_values(pixels).double()
    torch.testing.assert_close(alone, direct)


def smooth_images(n: int) -> torch.Tensor:
    """n smooth (3, 48, 40) images in [0, 1] (resized and cropped by the processor)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 40), indexing="ij")
    images = []
    for k in range(n):
        phase = 2 * math.pi * k / n
        images.append(
            torch.stack(
                [
                    0.5 + 0.4 * torch.sin(3 * x + phase),
                    0.5 + 0.4 * torch.cos(2 * y - phase),
                    (x + y) / 2,
                ]
            )
        )
    return torch.stack(images)


def test_the_differentiable_scorer_agrees_with_the_oracle(clip_files):
    clip, head = str(clip_files["clip"]), str(clip_files["pth"])
    scorer = AestheticScorer(clip, head)
    oracle = AestheticOracle(clip, head)
    images = smooth_images(4)
    processor_pixels = scorer.processor(
        images=[to_pil(image) for image in images], return_tensors="pt"
    )["pixel_values"]
    torch_pixels = scorer.preprocess(images)
    assert torch_pixels.shape == processor_pixels.shape == (4, 3, SIDE, SIDE)
    difference = (torch_pixels - processor_pixels).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.05  # normalised pixel units
    with torch.no_grad():
        scores = scorer(images).double()
    truth = oracle(list(images))
    spread = float(truth.max() - truth.min())
    assert spread > 0
    assert (scores - truth).abs().max() < 0.05 * spread
    symmetric = AestheticScorer(clip, head, value_range="symmetric")
    with torch.no_grad():
        torch.testing.assert_close(symmetric(images * 2 - 1).double(), scores)


def test_downsampling_matches_the_processors_antialiased_pil_resize(clip_files):
    scorer = AestheticScorer(str(clip_files["clip"]), str(clip_files["pth"]))
    generator = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (3, 4 * SIDE, 4 * SIDE), generator=generator, dtype=torch.uint8)
    expected = scorer.processor(images=[to_pil(u8)], return_tensors="pt")["pixel_values"]
    difference = (scorer.preprocess(u8[None].float() / 255) - expected).abs()
    # what is left: the processor rounds the resized image to uint8 (0.5/255/std), and the
    # kernels treat the border differently; an aliased resize is off by about 0.6 on average
    assert difference.mean() < 0.01 and difference.max() < 0.02


def test_the_scorer_gives_pixel_gradients_and_works_as_a_bf16_reward(clip_files):
    scorer = AestheticScorer(str(clip_files["clip"]), str(clip_files["pth"]))
    images = smooth_images(2).requires_grad_(True)
    expected = scorer(images)
    (grad,) = torch.autograd.grad(expected.sum(), images)
    assert grad.shape == images.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # as a fine-tuning reward under FrozenPrecision: cast to bf16, float32 images in and out
    holder = nn.Module()
    object.__setattr__(holder, "reward", scorer)
    callback = FrozenPrecision()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every floating tensor of it is float32: no warning
        assert callback.apply(holder, torch.bfloat16) == ["reward"]
    assert scorer.head.layers[0].weight.dtype == torch.bfloat16
    out = scorer(images)
    assert out.dtype == torch.float32
    # the tiny model's scores are near -0.07, where bf16 steps by 2^-11 (about 5e-4)
    torch.testing.assert_close(out, expected.detach(), rtol=2**-6, atol=1e-4)
    (grad16,) = torch.autograd.grad(out.sum(), images)
    assert grad16.dtype == torch.float32 and torch.isfinite(grad16).all()
    callback.restore()
    assert scorer.head.layers[0].weight.dtype == torch.float32

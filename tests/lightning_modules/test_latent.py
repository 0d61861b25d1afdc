"""Latent molecular diffusion: both stages through the CLI, checkpoints, fine-tuning gradients."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import selfies as sf
import torch

from seiko.cli import build_cli
from seiko.datamodules.molecules import canonical_smiles, load_vocabulary
from seiko.lightning_modules import LatentMoleculeDiffusion, SequenceAutoencoderModule
from seiko.nets import SequenceAutoencoder, VectorDenoiser

MOSES_TEST = Path(__file__).resolve().parents[2] / "data" / "moses_test_5k.csv.gz"
AE = {"latent_dim": 8, "embed_dim": 8, "encoder_hidden": 16, "decoder_hidden": 16}


def _data_args(tmp_path: Path) -> list[str]:
    return [
        "--data=seiko.datamodules.MoleculeDataModule",
        f"--data.path={MOSES_TEST}",
        "--data.max_molecules=64",
        "--data.seq_len=56",
        "--data.batch_size=16",
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> tuple[Path, Path]:
    """Checkpoints of two CLI stages: the autoencoder, then the latent diffusion on it."""
    tmp = tmp_path_factory.mktemp("latent")
    ae_args = [
        "fit",
        "--model=seiko.lightning_modules.SequenceAutoencoderModule",
        "--model.autoencoder=seiko.nets.SequenceAutoencoder",
        *[f"--model.autoencoder.{k}={v}" for k, v in AE.items()],
        "--model.beta_warmup_steps=1",
        *_data_args(tmp / "ae"),
    ]
    cli = build_cli(ae_args)
    ae_ckpt = tmp / "ae.ckpt"
    cli.trainer.save_checkpoint(ae_ckpt)
    assert cli.model.autoencoder.vocab_size == len(cli.datamodule.vocabulary)  # linked
    latent_args = [
        "fit",
        "--model=seiko.lightning_modules.LatentMoleculeDiffusion",
        "--model.autoencoder=seiko.nets.SequenceAutoencoder",
        *[f"--model.autoencoder.{k}={v}" for k, v in AE.items()],
        f"--model.autoencoder_checkpoint={ae_ckpt}",
        "--model.denoiser=seiko.nets.VectorDenoiser",
        f"--model.denoiser.dim={AE['latent_dim']}",
        "--model.denoiser.width=16",
        "--model.denoiser.n_layers=1",
        "--model.sampler.num_steps=4",
        *_data_args(tmp / "latent"),
    ]
    cli = build_cli(latent_args)
    latent_ckpt = tmp / "latent.ckpt"
    cli.trainer.save_checkpoint(latent_ckpt)
    for a, b in zip(
        cli.model.autoencoder.state_dict().values(),
        torch.load(ae_ckpt, weights_only=True)["state_dict"].values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b)  # loaded, and not trained by the diffusion stage
    return ae_ckpt, latent_ckpt


def test_latent_model_reloads_from_its_checkpoint_alone_and_decodes(stages):
    _, latent_ckpt = stages
    model = L.LightningModule.load_from_checkpoint(latent_ckpt, map_location="cpu")
    assert isinstance(model, LatentMoleculeDiffusion)
    assert float(model.latent_scale) > 0  # measured on the first pretraining batch, then saved
    smiles = model.decode(model.sample(6, generator=torch.Generator().manual_seed(0)))
    assert len(smiles) == 6 and all(s == "" or canonical_smiles(s) == s for s in smiles)
    z = model.encode(["CCO", "OCC", "c1ccccc1O"])
    assert z.shape == (3, 8)
    torch.testing.assert_close(z[0], z[1])  # two spellings of one molecule: one latent
    assert not torch.allclose(z[0], z[2])
    assert model.autoencoder.training is False
    model.train()
    assert model.autoencoder.training is False  # frozen: stays in eval mode


def test_finetuning_from_the_checkpoint_trains_the_denoiser_only(stages):
    ae_ckpt, latent_ckpt = stages
    vocabulary = load_vocabulary(str(ae_ckpt))  # the autoencoder stage keeps the vocabulary
    assert vocabulary == L.LightningModule.load_from_checkpoint(latent_ckpt).vocabulary
    model = LatentMoleculeDiffusion(
        VectorDenoiser(8, width=16, n_layers=1),
        SequenceAutoencoder(len(vocabulary), 56, **AE),
        vocabulary=vocabulary,
        seq_len=56,
        mode="finetune",
        pretrained_checkpoint=str(latent_ckpt),
    )
    reference = L.LightningModule.load_from_checkpoint(latent_ckpt)
    assert torch.equal(model.latent_scale, reference.latent_scale)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    model.snapshot_reference()
    model.reward = lambda z: -(z - 1.0).pow(2).sum(-1)  # a differentiable reward on the latent
    terms = model.finetune_loss(4)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.denoiser.parameters())
    assert all(p.grad is None for p in model.autoencoder.parameters())
    trainable = {id(p) for g in model.configure_optimizers().param_groups for p in g["params"]}
    assert trainable == {id(p) for p in model.denoiser.parameters()}


def test_autoencoder_module_losses_and_validation(stages):
    ae_ckpt, _ = stages
    module = L.LightningModule.load_from_checkpoint(ae_ckpt)
    assert isinstance(module, SequenceAutoencoderModule)
    tokens = torch.randint(0, module.autoencoder.vocab_size, (4, 56))
    terms = module.losses({"tokens": tokens}, sample=False)
    assert set(terms) == {"recon", "kl", "token_accuracy", "sequence_accuracy"}
    assert terms["recon"] > 0 and terms["kl"] >= 0
    with pytest.raises(ValueError, match="beta"):
        SequenceAutoencoderModule(SequenceAutoencoder(5, 4), beta=-1.0)


def test_latent_scale_must_be_known_before_decoding():
    model = LatentMoleculeDiffusion(
        VectorDenoiser(8, width=16, n_layers=1),
        SequenceAutoencoder(3, 5, **AE),
        vocabulary=["[C]", "[O]", "[nop]"],
        seq_len=5,
    )
    with pytest.raises(RuntimeError, match="latent_scale is not set"):
        model.decode(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="latent_scale must be > 0"):
        LatentMoleculeDiffusion(
            VectorDenoiser(8),
            SequenceAutoencoder(3, 5, **AE),
            ["[C]", "[O]", "[nop]"],
            5,
            latent_scale=-1.0,
        )


def test_exported_checkpoint_loads_alone_with_overridden_decoding(stages, tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "export_checkpoint.py"
    spec = importlib.util.spec_from_file_location("export_checkpoint", script)
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    _, latent_ckpt = stages
    target = exporter.export(latent_ckpt, tmp_path / "prior.ckpt", {"decode_beam_width": 3})
    slim = torch.load(target, weights_only=False)
    assert "optimizer_states" not in slim and "loops" not in slim
    assert slim["hyper_parameters"]["autoencoder_checkpoint"] is None  # no path to a lost file
    model = L.LightningModule.load_from_checkpoint(target, map_location="cpu")
    assert model.decode_beam_width == 3
    original = L.LightningModule.load_from_checkpoint(latent_ckpt, map_location="cpu")
    for a, b in zip(model.state_dict().values(), original.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no hyper-parameter 'decode_beam'"):
        exporter.export(latent_ckpt, tmp_path / "bad.ckpt", {"decode_beam": 3})
    assert exporter._key_value("decode_beam_width=4") == ("decode_beam_width", 4)
    with pytest.raises(Exception, match="KEY=VALUE"):
        exporter._key_value("decode_beam_width")
    vocabulary = model.vocabulary
    with pytest.raises(ValueError, match="decode_beam_width >= 1"):
        LatentMoleculeDiffusion(
            VectorDenoiser(8, width=16, n_layers=1),
            SequenceAutoencoder(len(vocabulary), 56, **AE),
            vocabulary=vocabulary,
            seq_len=56,
            decode_beam_width=0,
        )


def test_cached_latents_equal_encoded_ones_and_skip_the_encoder(stages):
    _, latent_ckpt = stages
    model = L.LightningModule.load_from_checkpoint(latent_ckpt, map_location="cpu")
    assert model.cache_latents  # the default
    selfies = [sf.encoder(s) for s in ("CCO", "c1ccccc1O", "CCO", "CC(=O)Oc1ccccc1C(=O)O")]
    tokens = model.token_ids(selfies)
    calls = []
    encode = model.autoencoder.encode

    def counting_encode(x):
        calls.append(x.shape[0])
        return encode(x)

    model.autoencoder.encode = counting_encode
    try:
        first = model._posterior_means(tokens)
        assert calls == [3]  # three distinct rows encoded once ("CCO" twice in the batch)
        second = model._posterior_means(tokens.flip(0))
        assert calls == [3]  # all cached: the encoder is not called again
    finally:
        del model.autoencoder.encode  # back to the class's method
    direct = model.autoencoder.encode(tokens)[0]
    torch.testing.assert_close(first, direct)
    torch.testing.assert_close(second, direct.flip(0))
    model.cache_latents = False
    torch.testing.assert_close(model._posterior_means(tokens), direct)
    # the loss sees the scaled means either way
    torch.manual_seed(0)
    uncached = model.denoising_loss({"tokens": tokens})
    model.cache_latents = True
    torch.manual_seed(0)
    assert torch.allclose(model.denoising_loss({"tokens": tokens}), uncached)


def test_token_ids_reject_a_smiles_given_for_selfies(stages):
    model = L.LightningModule.load_from_checkpoint(stages[1], map_location="cpu")
    with pytest.raises(ValueError, match="'CCO' is not a SELFIES string"):
        model.token_ids(["CCO"])


def test_straight_through_projection_reads_the_decoded_designs_latent(stages):
    _, latent_ckpt = stages
    model = L.LightningModule.load_from_checkpoint(
        latent_ckpt, map_location="cpu", reward_projection="straight_through"
    )
    x0 = model.sample(5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    projected = model.project(x0)
    designs = model.decode(x0.detach())
    for i, design in enumerate(designs):  # forward: the latent of the design x0 decodes to
        try:
            expected = model.encode([design])[0] if design else x0[i].detach()
        except ValueError:
            expected = x0[i].detach()
        torch.testing.assert_close(projected[i].detach(), expected)
    weights = torch.randn_like(x0)
    (projected * weights).sum().backward()
    torch.testing.assert_close(x0.grad, weights)  # backward: the identity
    model.reward_projection = "none"
    assert model.project(x0) is x0
    with pytest.raises(ValueError, match="reward_projection must be 'none' or 'straight_thr"):
        LatentMoleculeDiffusion(
            VectorDenoiser(8, width=16, n_layers=1),
            SequenceAutoencoder(len(model.vocabulary), 56, **AE),
            vocabulary=model.vocabulary,
            seq_len=56,
            reward_projection="decode",
        )


def test_decoder_stage_tunes_only_the_decoder_and_keeps_every_latent(stages, tmp_path):
    """Stage 3 (decoder_noise): the decoder side learns; encoder, embedding, denoiser and the
    latent scale come out of the run unchanged, so the diffusion model's latents still hold."""
    _, latent_ckpt = stages
    before = L.LightningModule.load_from_checkpoint(latent_ckpt, map_location="cpu")
    args = [
        "fit",
        "--model=seiko.lightning_modules.LatentMoleculeDiffusion",
        "--model.autoencoder=seiko.nets.SequenceAutoencoder",
        *[f"--model.autoencoder.{k}={v}" for k, v in AE.items()],
        "--model.denoiser=seiko.nets.VectorDenoiser",
        f"--model.denoiser.dim={AE['latent_dim']}",
        "--model.denoiser.width=16",
        "--model.denoiser.n_layers=1",
        "--model.sampler.num_steps=4",
        f"--model.pretrained_checkpoint={latent_ckpt}",
        "--model.decoder_noise=1.0",
        "--model.optimizer=torch.optim.AdamW",
        "--model.optimizer.lr=0.01",
        *_data_args(tmp_path),
        "--trainer.val_check_interval=2",
    ]
    cli = build_cli(args)
    after = cli.model
    trainable = {id(p) for g in after.configure_optimizers().param_groups for p in g["params"]}
    assert trainable == {id(p) for p in after.autoencoder.decoder_parameters()}
    assert "val/recon_clean" in cli.trainer.callback_metrics  # validation reports both losses
    assert after.autoencoder.training  # word dropout on while the decoder trains
    after.eval()
    assert not after.autoencoder.training
    old, new = before.state_dict(), after.state_dict()
    decoder = (
        "autoencoder.to_hidden",
        "autoencoder.start",
        "autoencoder.decoder",
        "autoencoder.head",
    )
    changed = {k for k in new if not torch.equal(old[k], new[k].cpu())}
    assert changed and all(k.startswith(decoder) for k in changed)  # only the decoder moved
    assert {k for k in new if k.startswith(decoder)} >= changed
    torch.testing.assert_close(
        after.encode(["CCO", "c1ccccc1O"]), before.encode(["CCO", "c1ccccc1O"])
    )
    tokens = after.token_ids([sf.encoder("CCO"), sf.encoder("c1ccccc1O")])
    # noise 0 is plain teacher-forced reconstruction; the noisy loss is a different number
    batch = {"tokens": tokens}
    after.eval()
    assert after.decoder_loss(batch, noise=0.0) == after.decoder_loss(batch, noise=0.0)


def test_decoder_stage_needs_a_trained_latent_model_in_pretrain_mode():
    vocabulary = ["[C]", "[O]", "[nop]"]
    parts = lambda: (  # noqa: E731
        VectorDenoiser(8, width=16, n_layers=1),
        SequenceAutoencoder(3, 56, **AE),
    )
    with pytest.raises(ValueError, match="needs mode='pretrain'"):
        LatentMoleculeDiffusion(
            *parts(), vocabulary=vocabulary, seq_len=56, mode="finetune", decoder_noise=1.0
        )
    with pytest.raises(ValueError, match="set pretrained_checkpoint"):
        LatentMoleculeDiffusion(*parts(), vocabulary=vocabulary, seq_len=56, decoder_noise=1.0)
    with pytest.raises(ValueError, match="decoder_noise must be >= 0"):
        LatentMoleculeDiffusion(*parts(), vocabulary=vocabulary, seq_len=56, decoder_noise=-1.0)

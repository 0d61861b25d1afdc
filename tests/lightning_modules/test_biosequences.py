"""DNADiffusion / RNADiffusion / ProteinDiffusion: round trips on the shipped data, class
conditioning, checkpoints, the online loop and ``seiko fit`` through the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from seiko.callbacks import OnlineExploration, UCBBonus
from seiko.cli import build_cli
from seiko.datamodules import SequenceDataModule
from seiko.lightning_modules import SamplerConfig, ScheduleConfig
from seiko.lightning_modules.biosequences import DNADiffusion, ProteinDiffusion, RNADiffusion
from seiko.nets import SequenceDenoiser
from seiko.oracles import FunctionOracle
from seiko.oracles.store import FeedbackStore

DATA = Path(__file__).resolve().parents[2] / "data"
DHS = DATA / "dna_dhs_human_200bp_16k.tsv.gz"
TRNA = DATA / "rna_trna1415_with_structure.tsv.gz"
UNIPROT = DATA / "protein_uniprot_4k.fa.gz"
DNA = ["A", "C", "G", "T"]
CELL_TYPES = ["GM12878_ENCLB441ZZZ", "HepG2_ENCLB029COU", "K562_ENCLB843GMH", "hESCT0_ENCLB449ZZZ"]


def tiny(cls, vocabulary: list[str], seq_len: int, num_classes: int | None = None, **kwargs):
    torch.manual_seed(0)
    denoiser = SequenceDenoiser(
        len(vocabulary), seq_len, d_model=16, n_layers=1, n_heads=2, num_classes=num_classes
    )
    kwargs.setdefault("schedule", ScheduleConfig(num_train_timesteps=50))
    kwargs.setdefault("sampler", SamplerConfig(num_steps=3))
    return cls(denoiser, vocabulary, seq_len, **kwargs)


def gc_fraction(design: str) -> float:
    """The oracle of the online-loop test: the GC content (NaN for an empty design)."""
    return (design.count("G") + design.count("C")) / len(design) if design else math.nan


# ---------------------------------------------------------------------- designs
@pytest.mark.parametrize(
    ("cls", "path", "kwargs"),
    [
        (DNADiffusion, DHS, {"alphabet": "dna", "seq_len": 200}),
        (
            RNADiffusion,
            TRNA,
            {"alphabet": "rna", "seq_len": 128, "pad_symbol": "-", "column": "seq"},
        ),
        (ProteinDiffusion, UNIPROT, {"alphabet": "protein", "seq_len": 300, "pad_symbol": "-"}),
    ],
)
def test_decode_encode_round_trip_on_shipped_sequences(cls, path: Path, kwargs):
    data = SequenceDataModule(str(path), max_sequences=150, val_fraction=0.0, **kwargs)
    sequences = data.sequences["train"]
    assert len(sequences) == 150
    model = tiny(cls, data.vocabulary, data.seq_len, pad_symbol=data.pad_symbol)
    x = model.encode(sequences)
    assert x.shape == (150, data.seq_len, len(data.vocabulary))
    assert model.decode(x) == sequences
    # the same one-hot as the datamodule's batches
    batch = data._collate([data.train_set[i] for i in range(len(sequences))])
    assert torch.equal(batch["x"], x)


def test_encode_names_the_design_position_and_letter():
    model = tiny(RNADiffusion, ["A", "C", "G", "U", "-"], 12, pad_symbol="-")
    with pytest.raises(ValueError, match=r"design 1 \('ACGT'\), position 4: letter 'T' .* RNA"):
        model.encode(["ACGU", "ACGT"])
    with pytest.raises(ValueError, match="has 13 symbols"):
        model.encode(["A" * 13])
    assert model.decode(model.encode(["", "ACGU"])) == ["", "ACGU"]  # all pads decode to ""


def test_each_module_checks_its_alphabet():
    with pytest.raises(ValueError, match=r"RNADiffusion needs the RNA alphabet 'ACGU'.*\['T'\] ex"):
        tiny(RNADiffusion, DNA, 8)
    with pytest.raises(ValueError, match=r"plus the pad symbol '-'"):
        tiny(DNADiffusion, DNA, 8, pad_symbol="-")
    protein = list("ACDEFGHIKLMNPQRSTVWY")
    assert tiny(ProteinDiffusion, protein[::-1], 8).vocabulary == protein[::-1]  # any order


# ---------------------------------------------------------------------- conditioning
def test_conditional_dna_sampling_shapes_and_target_label():
    model = tiny(DNADiffusion, DNA, 200, num_classes=4, labels=CELL_TYPES)
    cond = model.label_ids(["HepG2_ENCLB029COU", "K562_ENCLB843GMH"] * 3)
    assert cond.tolist() == [1, 2] * 3
    x = model.sample(6, cond=cond, batch_size=4)
    assert x.shape == (6, 200, 4) and torch.isfinite(x).all()
    designs = model.decode(x)
    assert len(designs) == 6 and all(len(d) == 200 and set(d) <= set("ACGT") for d in designs)

    target = tiny(
        DNADiffusion, DNA, 200, num_classes=4, labels=CELL_TYPES, target_label=CELL_TYPES[1]
    )
    same = target.sample(3, generator=torch.Generator().manual_seed(1))
    explicit = target.sample(3, cond=cond[:1].repeat(3), generator=torch.Generator().manual_seed(1))
    null = model.sample(3, generator=torch.Generator().manual_seed(1))  # same weights, null class
    assert torch.equal(same, explicit) and not torch.allclose(same, null)
    with pytest.raises(ValueError, match=r"labels \['liver'\] are not among the model's labels"):
        model.label_ids(["liver"])


def test_conditioning_arguments_are_checked():
    with pytest.raises(ValueError, match=r"num_classes=None but labels=\['a', 'b'\]"):
        tiny(DNADiffusion, DNA, 8, labels=["a", "b"])
    with pytest.raises(ValueError, match=r"num_classes=3 but labels=\['a', 'b'\]"):
        tiny(DNADiffusion, DNA, 8, num_classes=3, labels=["a", "b"])
    with pytest.raises(ValueError, match=r"target_label 'c' is not one of labels"):
        tiny(DNADiffusion, DNA, 8, num_classes=2, labels=["a", "b"], target_label="c")
    with pytest.raises(ValueError, match="unconditional"):
        tiny(DNADiffusion, DNA, 8).label_ids(["a"])


def test_ppo_trajectories_run_on_the_target_class_and_are_rescored_under_it():
    model = tiny(
        DNADiffusion, DNA, 8, num_classes=2, labels=["a", "b"], target_label="b", mode="ppo"
    )
    batch = model.sample_trajectories(3, generator=torch.Generator().manual_seed(0))
    assert batch["cond"].tolist() == [1, 1, 1]
    # the sampling model's own log-probabilities are recovered only under the class it used
    same, _ = model.sampler.log_prob(model.denoiser, batch["trajectory"], cond=batch["cond"])
    torch.testing.assert_close(same, batch["log_probs"])
    other, _ = model.sampler.log_prob(
        model.denoiser, batch["trajectory"], cond=torch.zeros_like(batch["cond"])
    )
    assert not torch.allclose(other, batch["log_probs"])


def test_pretraining_on_labelled_dhs_and_the_checkpoint_keeps_the_labels(
    dhs_table: Path, tmp_path: Path
):
    data = SequenceDataModule(
        str(dhs_table), label_column="TAG", split_column="data_label", batch_size=8
    )
    model = tiny(
        DNADiffusion, data.vocabulary, 200, num_classes=data.num_classes, labels=data.labels
    )
    before = [p.detach().clone() for p in model.denoiser.parameters()]
    # a real logger: Lightning checks that module and datamodule hyper-parameters agree
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.denoiser.parameters(), strict=True)
    )
    path = tmp_path / "dna.ckpt"
    trainer.save_checkpoint(path)
    denoiser = SequenceDenoiser(4, 200, d_model=16, n_layers=1, n_heads=2, num_classes=4)
    restored = DNADiffusion.load_from_checkpoint(path, denoiser=denoiser)
    assert restored.labels == CELL_TYPES and restored.target_label is None
    assert restored.label_ids(["hESCT0_ENCLB449ZZZ"]).tolist() == [3]


# ---------------------------------------------------------------------- online loop and CLI
def test_online_loop_designs_for_a_target_cell_type(dhs_table: Path, tmp_path: Path):
    data = SequenceDataModule(str(dhs_table), label_column="TAG", batch_size=4)
    model = tiny(
        DNADiffusion,
        data.vocabulary,
        200,
        num_classes=4,
        labels=data.labels,
        target_label="HepG2_ENCLB029COU",
        mode="finetune",
        kl_weight=0.01,
    )
    exploration = OnlineExploration(
        FunctionOracle(gc_fraction),
        budget=16,
        queries_per_round=[8, 8],
        bonus=UCBBonus(beta=1.0),
        reward_model={"epochs": 3},
        sample_batch_size=8,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[exploration],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    designs, values = store.designs_and_values()
    assert store.spent() == 16 and store.rounds() == [0, 1]
    assert all(len(d) == 200 and set(d) <= set("ACGT") for d in designs)
    assert torch.allclose(
        values, torch.tensor([gc_fraction(d) for d in designs], dtype=values.dtype)
    )
    assert [h["round"] for h in exploration.history] == [0.0, 1.0]


CONFIG = """
seed_everything: 0
model:
  class_path: seiko.lightning_modules.biosequences.DNADiffusion
  init_args:
    cond_dropout: 0.2
    denoiser:
      class_path: seiko.nets.SequenceDenoiser
      init_args: {{d_model: 16, n_layers: 1, n_heads: 2}}
    schedule: {{num_train_timesteps: 50}}
    sampler: {{num_steps: 3}}
data:
  class_path: seiko.datamodules.SequenceDataModule
  init_args:
    path: {data}
    alphabet: dna
    seq_len: 200
    label_column: TAG
    id_column: dhs_id
    split_column: data_label
    batch_size: 8
    predict_samples: 4
trainer:
  accelerator: cpu
  max_steps: 3
  limit_val_batches: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {root}
"""


def test_seiko_fit_and_predict_through_the_cli(dhs_table: Path, tmp_path: Path):
    config = tmp_path / "dna.yaml"
    config.write_text(CONFIG.format(data=dhs_table, root=tmp_path / "run"))
    cli = build_cli(["fit", f"--config={config}"])
    assert cli.model.labels == CELL_TYPES == cli.datamodule.labels
    assert cli.model.denoiser.num_classes == 4 and cli.model.vocabulary == DNA
    assert cli.trainer.global_step == 3
    (checkpoint,) = (tmp_path / "run").rglob("*.ckpt")
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["labels"] == CELL_TYPES and hparams["denoiser"]["init_args"]["num_classes"] == 4
    # the checkpoint alone rebuilds the model (LightningCLI saved the networks' config)
    restored = DNADiffusion.load_from_checkpoint(checkpoint)
    assert restored.labels == CELL_TYPES

    build_cli(["predict", f"--config={config}", f"--ckpt_path={checkpoint}"])
    (predictions,) = (tmp_path / "run").rglob("predictions.txt")
    designs = predictions.read_text().splitlines()
    assert len(designs) == 4 and all(len(d) == 200 and set(d) <= set("ACGT") for d in designs)


def test_cli_links_pad_and_no_labels_for_rna_and_protein(tmp_path: Path):
    for cls, path, alphabet, extra in (
        ("RNADiffusion", TRNA, "rna", ["--data.column=seq"]),
        ("ProteinDiffusion", UNIPROT, "protein", []),
    ):
        cli = build_cli(
            [
                "--data=seiko.datamodules.SequenceDataModule",
                f"--data.path={path}",
                f"--data.alphabet={alphabet}",
                "--data.seq_len=300",
                "--data.pad_symbol=-",
                *extra,
                f"--model=seiko.lightning_modules.biosequences.{cls}",
                "--model.denoiser=seiko.nets.SequenceDenoiser",
                "--model.denoiser.d_model=16",
                "--model.denoiser.n_heads=2",
                f"--trainer.default_root_dir={tmp_path}",
            ],
            run=False,
        )
        assert type(cli.model).__name__ == cls
        assert cli.model.pad_symbol == "-" and cli.model.vocabulary[-1] == "-"
        assert cli.model.labels is None and cli.model.denoiser.num_classes is None
        assert cli.model.denoiser.vocab_size == len(cli.datamodule.vocabulary)


def test_the_dhs_table_fixture_is_real(dhs_table: Path):
    with open(dhs_table) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 40 and {r["TAG"] for r in rows} == set(CELL_TYPES)
    assert {r["data_label"] for r in rows} == {"training", "validation", "test"}

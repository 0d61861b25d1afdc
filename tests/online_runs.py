"""Shared by the generated-config tests and the end-to-end tests of reward-guided sampling and
online PPO: the shipped priors and real oracles of the DNA, RNA, protein and MNIST tasks, shrunk
runs of the generated YAML through the CLI, the same runs built in Python, and the checks of what
the FeedbackStore holds.

Not a test module: the test files import it (``sys.path``, as tests/callbacks/online_fixture.py).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from seiko.callbacks import OnlineExploration, OnlinePPO, UCBBonus
from seiko.lightning_modules import SamplerConfig, ScheduleConfig
from seiko.oracles import ledger as ledger_module
from seiko.oracles.ledger import OracleLedger
from seiko.oracles.store import FeedbackRow, FeedbackStore

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


# ---------------------------------------------------------------------- the tasks
def _dna_oracle():
    from seiko.oracles.dna import EnhancerScore

    return EnhancerScore(cell_type="HepG2")


def _rna_oracle():
    from seiko.oracles.rna import StructureMatch

    return StructureMatch(
        target_id="DA1543", targets_path=str(ROOT / "data" / "rna_trna1415_with_structure.tsv.gz")
    )


def _protein_oracle():
    from seiko.oracles.protein import HMMScore

    return HMMScore(hmm=str(ROOT / "data" / "hmm" / "Pkinase.hmm"))


def _digit3():
    from seiko.oracles.digits import DigitConfidence

    return DigitConfidence(
        target=3, weights=str(ROOT / "models" / "images" / "digit_classifier.pt")
    )


def _incompressible3():
    from seiko.oracles import ProductOracle
    from seiko.oracles.images import JPEGIncompressibility

    return ProductOracle([JPEGIncompressibility(), _digit3()], name="incompressible_3")


@dataclass(frozen=True)
class Task:
    """One task directory of generated configs, its shipped prior and its oracle (built here, in
    Python, independently of the YAML)."""

    directory: Path
    prior: Path
    oracle: Callable[[], Any]

    def config(self, method: str) -> Path:
        return self.directory / f"{method}.yaml"


TASKS = {
    "dna": Task(CONFIGS / "dna" / "hepg2_enhancer", ROOT / "models/dna/prior.ckpt", _dna_oracle),
    "rna": Task(CONFIGS / "rna" / "trna_structure", ROOT / "models/rna/prior.ckpt", _rna_oracle),
    "protein": Task(
        CONFIGS / "protein" / "kinase_hmm", ROOT / "models/protein/prior.ckpt", _protein_oracle
    ),
    "mnist_digit3": Task(
        CONFIGS / "images" / "mnist_digit3", ROOT / "models/images/mnist_prior.ckpt", _digit3
    ),
    "mnist_incompressible3": Task(
        CONFIGS / "images" / "mnist_incompressible3",
        ROOT / "models/images/mnist_prior.ckpt",
        _incompressible3,
    ),
}
#: Every method a task directory holds (scripts/make_{sequence,image}_configs.py).
METHODS = {"seiko_ucb", "seiko_bootstrap", "seiko_ts", "greedy", "non_adaptive", "guidance", "ppo"}
#: The module's mode each method's config sets.
MODES = {"guidance": "guidance", "ppo": "ppo"}


def expected_mode(method: str) -> str:
    return MODES.get(method, "finetune")


# ---------------------------------------------------------------------- generated configs
def assert_generator_up_to_date(script: str) -> None:
    """``python scripts/<script> --check`` finds every file it writes unchanged."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def prior_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_prior_network(denoiser: torch.nn.Module, prior: Path, weights: bool = True) -> None:
    """The denoiser is the prior's network (same keys and shapes), holding the prior's weights
    unless ``weights`` is False (a pretraining config builds the network, not its weights)."""
    shipped = prior_checkpoint(prior)["state_dict"]
    saved = {
        k.removeprefix("denoiser."): v for k, v in shipped.items() if k.startswith("denoiser.")
    }
    state = denoiser.state_dict()
    assert saved and state.keys() == saved.keys()
    for key, value in saved.items():
        assert state[key].shape == value.shape, key
        if weights:
            torch.testing.assert_close(state[key], value, msg=key)


# ---------------------------------------------------------------------- shrunk runs
def shrunk_cli_args(
    method: str,
    task: str,
    root: Path,
    *,
    budget: int = 24,
    queries: list[int] | None = None,
    samples: int = 10,
    num_steps: int = 4,
    epochs: int | None = None,
    steps: int | None = None,
) -> list[str]:
    """``seiko fit`` arguments that run the generated ``<task>/<method>.yaml`` small: the budget,
    the queries (guidance) or samples per update (PPO), sampler steps, chains per step and epochs
    overridden on the command line; the callbacks list (the YAML's own, with those numbers and a
    checkpoint directory under ``root``) replaces the YAML's. Run with the repository as cwd."""
    config = TASKS[task].config(method)
    spec = yaml.safe_load(config.read_text())
    callbacks = spec["trainer"]["callbacks"]
    feedback = callbacks[0]["init_args"]
    feedback["budget"] = budget
    if method == "ppo":
        assert callbacks[0]["class_path"] == "seiko.callbacks.OnlinePPO"
        feedback["samples_per_update"] = samples
        epochs = 10 if epochs is None else epochs  # it stops once the budget is spent
    else:
        assert callbacks[0]["class_path"] == "seiko.callbacks.OnlineExploration"
        feedback["queries_per_round"] = queries or [16, 16]
        feedback["reward_model"].update({"epochs": 2, "patience": 2})
        feedback["fit_progress"] = False
        epochs = len(feedback["queries_per_round"]) if epochs is None else epochs
        steps = 1 if steps is None else steps
    (checkpoint,) = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    checkpoint["init_args"]["dirpath"] = str(root / "checkpoints")
    args = [
        "fit",
        "--config",
        str(config),
        f"--trainer.callbacks={json.dumps(callbacks)}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.init_args.sampler.num_steps={num_steps}",
        "--data.init_args.batch_size=2",
    ]
    if steps is not None:
        args.append(f"--trainer.limit_train_batches={steps}")
    return args


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def python_module(task: str, method: str, num_steps: int = 4) -> L.LightningModule:
    """The config's module built directly in Python: its class and the prior's network, its mode,
    target class, KL weight and learning rate, a short sampler; weights from the prior."""
    init = yaml.safe_load(TASKS[task].config(method).read_text())["model"]
    args = init["init_args"]
    prior = TASKS[task].prior
    hparams = prior_checkpoint(prior)["hyper_parameters"]
    denoiser = _import(hparams["denoiser"]["class_path"])(**hparams["denoiser"]["init_args"])
    domain = {"labels": hparams["labels"], "target_label": args.get("target_label")}
    if "vocabulary" in hparams:  # a sequence module
        domain.update(
            vocabulary=hparams["vocabulary"],
            seq_len=hparams["seq_len"],
            pad_symbol=hparams["pad_symbol"],
        )
    sampler = SamplerConfig(
        num_steps=num_steps, guidance_scale=args["sampler"].get("guidance_scale", 1.0)
    )
    lr = args["optimizer"]["init_args"]["lr"]
    return _import(init["class_path"])(
        denoiser,
        **domain,
        mode=args["mode"],
        schedule=ScheduleConfig(**hparams["schedule"]),
        sampler=sampler,
        kl_weight=args["kl_weight"],
        pretrained_checkpoint=str(prior),
        optimizer=partial(torch.optim.Adam, lr=lr),
    )


def python_callback(
    task: str, method: str, budget: int = 24, queries: list[int] | None = None, samples: int = 10
) -> OnlineExploration | OnlinePPO:
    """The config's feedback callback built directly in Python, with the task's own oracle."""
    args = yaml.safe_load(TASKS[task].config(method).read_text())["trainer"]["callbacks"][0]
    args = args["init_args"]
    oracle = TASKS[task].oracle()
    if method == "ppo":
        return OnlinePPO(
            oracle,
            budget=budget,
            samples_per_update=samples,
            ppo_epochs=args["ppo_epochs"],
            clip_range=args["clip_range"],
        )
    return OnlineExploration(
        oracle,
        budget=budget,
        queries_per_round=queries or [16, 16],
        bonus=UCBBonus(beta=args["bonus"]["init_args"]["beta"]),
        reward_model={"architecture": args["reward_model"]["architecture"], "epochs": 2},
    )


def fit(
    model: L.LightningModule,
    callbacks: list,
    root: Path,
    *,
    epochs: int,
    steps: int,
    ckpt_path: str | None = None,
) -> L.Trainer:
    """Fit on CPU, quietly, with a checkpoint every epoch under ``root/checkpoints``; the batches
    only say how many chains a step runs (guidance and PPO ignore them)."""
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=steps,
        limit_val_batches=0,
        callbacks=[
            *callbacks,
            L.pytorch.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_last=True),
        ],
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = DataLoader(torch.zeros(4, 1), batch_size=2)
    trainer.fit(model, train_dataloaders=data, ckpt_path=ckpt_path)
    return trainer


# ---------------------------------------------------------------------- what was paid
class SimulatedCrashError(RuntimeError):
    """Raised once a round's answers are committed, before anything checkpoints them."""


@dataclass
class OracleSpy:
    """Every design the ledger sent to the oracle (its store key), across runs of one test."""

    asked: list[str]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.asked:
            counts[key] = counts.get(key, 0) + 1
        return counts


def _key(design: Any) -> str:
    from PIL import Image

    from seiko.lightning_modules.images import image_key

    return image_key(design) if isinstance(design, Image.Image) else str(design)


def spy_on_oracle(
    monkeypatch: pytest.MonkeyPatch, crash_after_round: int | None = None
) -> OracleSpy:
    """Record what the oracle is asked (through ``OracleLedger``, which every callback pays
    through); with ``crash_after_round``, raise ``SimulatedCrashError`` once that round's answers
    are committed to the store."""
    spy = OracleSpy([])
    measure = ledger_module.measure

    def recording(oracle, designs):
        spy.asked.extend(_key(d) for d in designs)
        return measure(oracle, designs)

    monkeypatch.setattr(ledger_module, "measure", recording)
    if crash_after_round is not None:
        ledger_measure = OracleLedger.measure

        def crashing(self, designs, round, keys=None):
            values = ledger_measure(self, designs, round=round, keys=keys)
            if round == crash_after_round:
                raise SimulatedCrashError(f"killed after round {round} was paid")
            return values

        monkeypatch.setattr(OracleLedger, "measure", crashing)
    return spy


def _designs(task: str, keys: list[str]) -> list[Any]:
    if task.startswith("mnist"):
        from seiko.lightning_modules.images import image_from_key

        images = [image_from_key(key) for key in keys]
        assert all(image.mode == "L" and image.size == (28, 28) for image in images)
        return images
    return keys


def assert_real_oracle_rows(
    task: str, root: Path, budget: int, spy: OracleSpy | None = None
) -> list[FeedbackRow]:
    """The run's store (``<root>/feedback.sqlite``) holds exactly ``budget`` paid rows of the
    task's oracle, every design once, and each value is what the real oracle answers for that
    design now; with ``spy``, the oracle was asked for exactly those designs, each once."""
    oracle = TASKS[task].oracle()
    with FeedbackStore(root / "feedback.sqlite") as store:
        rows = store.rows()
        assert store.spent() == store.spent(oracle.name) == budget  # spent, and not exceeded
    assert len(rows) == budget
    assert {r.source for r in rows} == {"oracle"} and {r.oracle for r in rows} == {oracle.name}
    keys = [r.design for r in rows]
    assert len(set(keys)) == budget
    stored = torch.tensor([r.value for r in rows], dtype=torch.float64)
    assert bool(torch.isfinite(stored).any()), "no feasible design: nothing real was measured"
    again = torch.as_tensor(oracle(_designs(task, keys)), dtype=torch.float64)
    torch.testing.assert_close(stored, again, rtol=1e-5, atol=1e-6, equal_nan=True)
    if spy is not None:
        assert sorted(spy.asked) == sorted(keys)  # paid exactly what is stored ...
        assert max(spy.counts.values()) == 1  # ... and nothing twice
    return rows


def rounds_of(rows: list[FeedbackRow]) -> dict[int, int]:
    """Paid rows per round (PPO: per update)."""
    out: dict[int, int] = {}
    for row in rows:
        out[row.round] = out.get(row.round, 0) + 1
    return out

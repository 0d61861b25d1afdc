"""Write configs/<domain>/<task>/<method>.yaml: every method on one task per sequence domain (DNA,
RNA, protein), each starting from the shipped prior ``models/<domain>/prior.ckpt``.

Run from the repository root after changing a shared setting here::

    python scripts/make_sequence_configs.py            # write the files
    python scripts/make_sequence_configs.py --check    # exit 1 if a file is not what it writes

Methods: the five online methods of the paper (SEIKO-UCB, -Bootstrap, -TS, Greedy, Non-adaptive)
and its other two families, as in scripts/make_molecule_configs.py: reward-guided sampling
(``guidance``: the online loop's reward model with the UCB bonus steers the prior's sampler, which
is never trained) and online PPO (``ppo``, DDPO: every sample it learns from is a paid query, no
reward model), all at one budget.

The twenty-one files differ only in the domain (prior, data, oracle) and the method. The DNA task
designs HepG2 enhancers (``target_label``: every chain runs on that cell type's class) in every
method, PPO included (its trajectories carry the class they were sampled with).
The denoiser, schedule and data settings are read from the prior's own
``configs/<domain>/pretrain.yaml``, so a fine-tuning run builds exactly the network the shipped
weights belong to; the oracles are the YAML blocks of docs/sequences.md (``<!-- dna-oracle -->``,
``<!-- rna-oracle -->``) or written here (the kinase HMM). tests/test_sequence_configs.py checks
that the files are up to date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml
from config_methods import PPO, online_methods
from config_methods import other_methods as shared_other_methods

ROOT = Path(__file__).resolve().parents[1]


def docs_oracle(marker: str) -> dict:
    """The oracle of the YAML block after ``<!-- marker -->`` in docs/sequences.md."""
    text = (ROOT / "docs" / "sequences.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```yaml\n(.*?)```", text, re.S)
    if block is None:
        raise RuntimeError(f"docs/sequences.md lost its <!-- {marker} --> YAML block")
    return yaml.safe_load(block.group(1))["oracle"]


def pretrain_config(domain: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / domain / "pretrain.yaml").read_text())


#: DNA's class order: the prior's labels (the datamodule's sorted TAG values), fixed so that class
#: k means the same cell type in the fine-tuning run as in the prior.
DNA_LABELS = ["GM12878_ENCLB441ZZZ", "HepG2_ENCLB029COU", "K562_ENCLB843GMH", "hESCT0_ENCLB449ZZZ"]

TASKS = {
    "dna": {
        "task": "hepg2_enhancer",
        "oracle": docs_oracle("dna-oracle"),  # EnhancerScore(cell_type="HepG2")
        "target_label": "HepG2_ENCLB029COU",  # design HepG2 enhancers: chains run on that class
        "ucb_beta": 0.05,
        # why: a reward CNN fitted from scratch on 64-256 answers ranks held-out sequences no
        # better than chance on this motif oracle (Spearman ~0); an MLP on the frozen features of
        # a cell-type classifier pretrained on the DHS labels does (benchmarks/reward_features.py)
        "reward_model": {"architecture": "mlp", "features": "models/dna/features.ckpt"},
    },
    "rna": {
        "task": "trna_structure",
        "oracle": docs_oracle("rna-oracle"),  # StructureMatch to tRNA DA1543 (74 nt)
        "target_label": None,
        "ucb_beta": 0.05,
        # why: the prior draws the target's 74 nt only 10-21 % of the time; a sequence of another
        # length is known infeasible without a measurement (StructureMatch.fits), so no method
        # pays for one (docs/sequences.md, "Designs of the wrong length are screened")
        "screen": True,
        # why: at kl_weight 0.1 every fine-tuned RNA generator loses the tRNA 3-mer spectrum
        # (final r ~0.11 against a bound of 0.47); weight 10 keeps it, and measuring the best of 16x
        # the round's quota of fitting samples (ranked by the method's acquisition value) is what
        # then gains AUC (docs/sequences_log.md, "Session 14"). Fine-tuning methods only:
        # guidance and PPO keep the shared settings.
        "finetune": {"kl_weight": 10.0, "select_from": 16},
    },
    "protein": {
        "task": "kinase_hmm",
        "oracle": {
            "class_path": "seiko.oracles.protein.HMMScore",
            "init_args": {"hmm": "data/hmm/Pkinase.hmm"},
        },
        "target_label": None,
        # why: the score is in bits (real proteins 0-10, kinases 50-250), ~20x the scale of the
        # DNA and RNA scores, and the UCB bonus must be on the reward's scale
        "ucb_beta": 1.0,
    },
}

# Small enough that one run takes about 10 minutes on this shared 2-core CPU (measured for DNA
# SEIKO-UCB, docs/sequences.md "Tasks and configs"): 4 rounds of 64 queries; per round 6
# fine-tuning steps of 8 chains, gradient through the last 10 of the 50 sampler steps.
# Provisional fine-tuning settings (not swept): lr 5e-5, kl_weight 0.1 on the per-dimension KL.
ROUNDS = 4
BUDGET = 256
STEPS_PER_ROUND = 6
CHAINS_PER_STEP = 8
LR = 5.0e-5
KL_WEIGHT = 0.1
PER_ROUND = [BUDGET // ROUNDS] * ROUNDS


def methods(ucb_beta: float) -> dict[str, dict]:
    return online_methods(ucb_beta, BUDGET, ROUNDS)


def other_methods(ucb_beta: float) -> dict[str, dict]:
    return shared_other_methods(ucb_beta, BUDGET, ROUNDS)


GUIDANCE_SCALE = 1.0
METHODS = [*methods(0.0), *other_methods(0.0)]
MODULES = {
    "dna": "seiko.lightning_modules.biosequences.DNADiffusion",
    "rna": "seiko.lightning_modules.biosequences.RNADiffusion",
    "protein": "seiko.lightning_modules.biosequences.ProteinDiffusion",
}


def config(domain: str, method: str) -> dict:
    spec, prior_config = TASKS[domain], pretrain_config(domain)
    prior = f"models/{domain}/prior.ckpt"
    root = f"runs/{domain}_{spec['task']}_{method}"
    pretrained = prior_config["model"]["init_args"]
    data = dict(prior_config["data"]["init_args"])
    data["batch_size"] = CHAINS_PER_STEP
    if domain == "dna":
        data["labels"] = DNA_LABELS
    mode = {"guidance": "guidance", "ppo": "ppo"}.get(method, "finetune")
    model = {"mode": mode, "pretrained_checkpoint": prior}
    if spec["target_label"] is not None:
        model["target_label"] = spec["target_label"]
    sampler = {"num_steps": 50, "checkpoint": True}
    if mode == "finetune":
        sampler["truncate"] = 10  # acts on the fine-tuning chain (with gradient) only
    if mode == "guidance":
        sampler["guidance_scale"] = GUIDANCE_SCALE
    overrides = spec.get("finetune", {}) if mode == "finetune" else {}
    model.update(
        {
            "denoiser": pretrained["denoiser"],
            "kl_weight": overrides.get("kl_weight", KL_WEIGHT),
            "schedule": pretrained["schedule"],
            "sampler": sampler,
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": LR}},
        }
    )
    if mode == "ppo":
        feedback = {
            "class_path": "seiko.callbacks.OnlinePPO",
            "init_args": {
                "oracle": spec["oracle"],
                "budget": BUDGET,
                **({"screen": True} if spec.get("screen") else {}),
                **PPO,
            },
        }
        # runs until the budget is spent: BUDGET / samples_per_update updates
        length = {"max_epochs": 1000, "limit_train_batches": 2 * PPO["ppo_epochs"]}
    else:
        exploration = {
            "oracle": spec["oracle"],
            "budget": BUDGET,
            **({"screen": True} if spec.get("screen") else {}),
            **({"select_from": overrides["select_from"]} if "select_from" in overrides else {}),
            **{**methods(spec["ucb_beta"]), **other_methods(spec["ucb_beta"])}[method],
            "reward_model": {
                **spec.get("reward_model", {"architecture": "cnn"}),
                "epochs": 100,
                "patience": 10,
            },
            "fit_progress": True,
        }
        feedback = {"class_path": "seiko.callbacks.OnlineExploration", "init_args": exploration}
        length = {"max_epochs": ROUNDS, "limit_train_batches": STEPS_PER_ROUND}  # a round an epoch
    return {
        "seed_everything": 0,
        "model": {"class_path": MODULES[domain], "init_args": model},
        "data": {"class_path": "seiko.datamodules.SequenceDataModule", "init_args": data},
        "trainer": {
            "accelerator": "cpu",
            **length,
            "limit_val_batches": 0,
            "default_root_dir": root,
            "callbacks": [
                feedback,
                {"class_path": "seiko.callbacks.FeedbackReport"},
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": f"{root}/checkpoints", "save_last": True},
                },
            ],
        },
    }


HEADER = (
    "# Written by scripts/make_sequence_configs.py ({domain}, {task} task, {method}); edit that "
    "script, not this file.\n# Starts from the shipped prior ({prior}); the data only size the "
    "fine-tuning batches\n# (chains per step){labels}.\n"
)


def render(domain: str, method: str) -> str:
    text = yaml.safe_dump(config(domain, method), sort_keys=False, width=100)
    labels = " and fix the class order of the prior's labels" if domain == "dna" else ""
    header = HEADER.format(
        domain=domain,
        task=TASKS[domain]["task"],
        method=method,
        prior=f"models/{domain}/prior.ckpt",
        labels=labels,
    )
    return header + text


def paths() -> dict[Path, str]:
    return {
        ROOT / "configs" / domain / TASKS[domain]["task"] / f"{method}.yaml": render(domain, method)
        for domain in TASKS
        for method in METHODS
    }


def main() -> None:
    check = "--check" in sys.argv
    stale = []
    for path, text in paths().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(ROOT))
    if stale:
        sys.exit(f"stale configs (run scripts/make_sequence_configs.py): {stale}")


if __name__ == "__main__":
    main()

"""The method blocks every config generator shares (scripts/make_{sequence,image}_configs.py):
the paper's five online methods and its other two families, at one budget."""

from __future__ import annotations

#: Online PPO (DDPO): every sample it learns from is measured; no reward model.
PPO = {"samples_per_update": 50, "ppo_epochs": 2, "clip_range": 1.0e-4}


def online_methods(ucb_beta: float, budget: int, rounds: int) -> dict[str, dict]:
    """OnlineExploration arguments of SEIKO-UCB, -Bootstrap, -TS, Greedy and Non-adaptive."""
    per_round = [budget // rounds] * rounds
    return {
        "seiko_ucb": {
            "bonus": {"class_path": "seiko.callbacks.UCBBonus", "init_args": {"beta": ucb_beta}},
            "queries_per_round": per_round,
        },
        "seiko_bootstrap": {
            "bonus": {"class_path": "seiko.callbacks.BootstrapBonus", "init_args": {"members": 4}},
            "queries_per_round": per_round,
        },
        "seiko_ts": {
            "bonus": {"class_path": "seiko.callbacks.ThompsonBonus", "init_args": {"members": 4}},
            "queries_per_round": per_round,
        },
        "greedy": {
            "bonus": {"class_path": "seiko.callbacks.Greedy"},
            "queries_per_round": per_round,
        },
        # Non-adaptive: the whole budget is measured on the prior's samples before any
        # fine-tuning; the model is then fine-tuned on that one reward model.
        "non_adaptive": {
            "bonus": {"class_path": "seiko.callbacks.Greedy"},
            "queries_per_round": [budget] + [0] * (rounds - 1),
        },
    }


def other_methods(ucb_beta: float, budget: int, rounds: int) -> dict[str, dict]:
    """Reward-guided sampling (the online loop's reward model with the UCB bonus steers the
    sampler; the model is never trained) and online PPO, at the same budget."""
    return {
        "guidance": {
            "bonus": {"class_path": "seiko.callbacks.UCBBonus", "init_args": {"beta": ucb_beta}},
            "queries_per_round": [budget // rounds] * rounds,
        },
        "ppo": PPO,
    }

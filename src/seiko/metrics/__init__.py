"""torchmetrics Metrics: oracle-budget AUC, diversity, novelty, validity."""

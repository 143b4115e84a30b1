"""recpo.dashboard: the W&B workspace and report of a sweep, as code (``wandb-workspaces``,
``pip install -e '.[dashboard]'``). See the README, "Dashboards"."""

"""Model-side code: backbones, adapters and answer scoring."""

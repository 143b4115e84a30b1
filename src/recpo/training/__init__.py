"""Training stages as LightningModules: SFT and preference optimization."""

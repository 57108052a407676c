"""Pictures: sample grids, loss curves, latent walks."""

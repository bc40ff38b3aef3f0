"""Training code for the codec: losses, discriminators, the training loop."""

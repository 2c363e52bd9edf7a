"""Training: point-in-time correct training sets through the Feast SDK, a torch model, a manifest."""

"""One router per resource: encode, decode, sample, model, and health (liveness, readiness, metrics)."""

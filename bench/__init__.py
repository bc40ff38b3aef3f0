"""Benchmarks that print numbers: the codec's speed and memory, the server under load, the
training step. Kept out of the wheel; run them from a checkout:

    python -m bench.speed        # encode/decode real-time factors beside EnCodec, peak memory
    python -m bench.entropy      # the entropy coder's symbols per second and size overhead
    python -m bench.loadtest     # the server at fixed arrival rates, batching on and off
    python -m bench.train_step   # ms per training step in several set-ups

They import codec/, server/ and training/; nothing there imports them.
"""

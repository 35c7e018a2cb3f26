"""One arm: its spec (a leaf), the network and its training loop, batches, checkpoints,
determinism, tracking, and the arm kinds (single, bagged regions, features)."""

"""What every layer stands on: errors, registries, atomic files, the lock, the study and arm
folder layout, the user cache."""

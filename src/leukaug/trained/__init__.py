"""Using a trained arm: one loader (`loader.load_trained_arm`), predict, export, explain."""

"""Engine adapters: built objects (model, dataset, collator, schedule) → a training loop."""

"""Stage two and fine-tuning: run directories, training state, evaluation during training, the two recipes."""

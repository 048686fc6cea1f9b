"""Model side: tokenizer and model loading, PEFT methods, the training loss."""

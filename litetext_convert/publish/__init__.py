"""Publishing to the Hub: push and the model card."""

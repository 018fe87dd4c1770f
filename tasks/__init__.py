"""The built-in model's task suite and its evaluation harness."""

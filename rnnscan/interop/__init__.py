"""Weight import from torch and TensorFlow."""

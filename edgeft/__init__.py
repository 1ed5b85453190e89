"""edgeft: pretrained model + labeled data -> verified edge engines."""
__version__ = "0.1.0"

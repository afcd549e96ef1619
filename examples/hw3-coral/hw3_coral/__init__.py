"""Deep CORAL and a rotated-MNIST domain, as an hw3 plugin (see `hw3_coral.plugin`)."""

__version__ = "0.1.0"

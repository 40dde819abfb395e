"""Tails: chasing comets with the Zwicky Transient Facility and deep learning."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

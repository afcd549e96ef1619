"""Moved to `runner.generate.networks`. Kept because generators logged by hw3 0.1 were pickled
with this module's path; loading one (`hw3 sample`) looks its classes up here."""

from runner.generate.networks import Discriminator, Generator, Sampler  # noqa: F401

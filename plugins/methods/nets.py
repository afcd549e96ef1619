"""Moved to `runner.adapt.networks`. Kept because models logged by hw3 0.1 were pickled with this
module's path; loading one (`hw3 tsne`, adda's `source_run`) looks its classes up here."""

from runner.adapt.networks import DigitClassifier, FromUnitRange  # noqa: F401

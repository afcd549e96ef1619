"""`hw3 tune`: search a method's settings on Optuna, choose among them with a validator, and check
that choice against the oracle's. Run machinery: it starts runs, and commands call it."""

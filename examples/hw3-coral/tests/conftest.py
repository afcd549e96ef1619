# The `hw3_env` fixture: a sandboxed MLflow store, cache and plugin manager for each test.
from runner.testing import hw3_env  # noqa: F401

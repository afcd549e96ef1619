"""The built-in validators (`runner.adapt.validators`), registered as a third party would."""

from __future__ import annotations

from collections.abc import Callable

from runner import Validator, hookimpl


@hookimpl
def hw3_register_validators(register: Callable[[Validator], None]) -> None:
    from runner.adapt.validators import builtin_validators

    for validator in builtin_validators():
        register(validator)

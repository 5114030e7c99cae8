"""`@frozen`: a dataclass that the type checker holds frozen and that is built at plain speed.

A frozen dataclass sets each field in `__init__` through `object.__setattr__` (its own
`__setattr__` refuses), three times the cost of a plain one: 6.5 against 2.5 µs for `Phone`'s 14
fields. A hit builds a dozen such records (its event, the phone after each step, its calls, its
messages): 12 % of a hit's instructions under the bench's mix of calls (bench/README.md).

So the records built on every hit (its event, the phone after each step, its calls and their
records, its messages, its row for the store, its entry in the status page's hit log, its phone's
discovery info) use this instead of `@dataclass(frozen=True, slots=True)`. For mypy (strict,
in the test command) they are frozen all the same: assigning a field is a type error, through
`dataclass_transform(frozen_default=True)`. What they lose is the refusal at run time, which no
code of the bridge relies on. They keep the frozen dataclass's equality and hash, and
`dataclasses.replace` works on them as before.
"""

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    return dataclass(slots=True, unsafe_hash=True)(cls)

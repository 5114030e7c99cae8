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

`replace` here is `dataclasses.replace` for mypy and a faster one at run time: a hit copies
its phone with changes about three times, and `dataclasses.replace` walks every field in
Python (2.8 µs for `Phone`, against 1.4). Using it cut 5.4 % of a hit's instructions in-process.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, dataclass_transform

T = TypeVar("T")

# How `replace` rebuilds each @frozen class: a getter of all its fields at once, and each
# field's place among them.
_PLANS: dict[type, tuple[Callable[[Any], tuple[Any, ...]], dict[str, int]]] = {}


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    built = dataclass(slots=True, unsafe_hash=True)(cls)
    found = dataclasses.fields(built)  # type: ignore[arg-type]
    names = [f.name for f in found]
    if len(names) > 1 and all(f.init for f in found):  # else `replace` leaves it to dataclasses
        _PLANS[built] = (attrgetter(*names), {name: at for at, name in enumerate(names)})
    return built


def _replace(obj: T, /, **changes: Any) -> T:
    """`dataclasses.replace` for a @frozen class at half its cost: one C call reads every field,
    and the changed ones are put in their places. Any other dataclass goes to
    `dataclasses.replace`."""
    cls = type(obj)
    plan = _PLANS.get(cls)
    if plan is None:
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    read, places = plan
    values = list(read(obj))
    for name, value in changes.items():
        at = places.get(name)
        if at is None:
            raise TypeError(f"{cls.__name__}.__init__() got an unexpected keyword argument {name!r}")
        values[at] = value
    return cls(*values)


if TYPE_CHECKING:  # mypy checks the fields a call names against the class, as it does for
    from dataclasses import replace as replace  # dataclasses.replace (its dataclass plugin)
else:
    replace = _replace

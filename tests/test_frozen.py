"""`@frozen` (bridge/frozen.py): records that mypy holds frozen and that are plain at run time.

Run time no longer refuses an assignment to their fields, so the type checker must: this runs
mypy on code that assigns a field of every `@frozen` class, and expects a refusal for each.
"""

import dataclasses
import importlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mypy import api as mypy_api

from bridge.calls import Call, CallState, Phone
from bridge.frozen import replace

ROOT = Path(__file__).resolve().parent.parent
_FROZEN = re.compile(r"^@frozen\nclass (\w+)", re.MULTILINE)


def frozen_classes() -> list[tuple[str, str]]:
    """(module, class) of every `@frozen` class in the package."""
    found = []
    for path in sorted((ROOT / "bridge").glob("*.py")):
        for name in _FROZEN.findall(path.read_text()):
            found.append((f"bridge.{path.stem}", name))
    return found


def test_every_frozen_record_is_read_only_for_mypy(tmp_path: Path) -> None:
    classes = frozen_classes()
    assert len(classes) >= 8  # the records a hit builds, at least
    lines = []
    for index, (module, name) in enumerate(classes):
        cls = getattr(importlib.import_module(module), name)
        field = dataclasses.fields(cls)[0].name
        lines += [
            f"import {module}",
            f"def assign_{index}(record: {module}.{name}) -> None:",
            f"    record.{field} = record.{field}",
        ]
    snippet = tmp_path / "assigns.py"
    snippet.write_text("\n".join(lines) + "\n")
    out, _, status = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    refused = {int(n) for n in re.findall(r"assigns\.py:(\d+): error: .* is read-only", out)}
    expected = {3 * index + 3 for index in range(len(classes))}
    assert status == 1
    assert refused == expected, out


def test_frozen_records_compare_and_hash_by_value() -> None:
    phone = Phone(device="001565aabbcc", model="SIP-T46S")
    same = Phone(device="001565aabbcc", model="SIP-T46S")
    assert phone is not same
    assert phone == same
    assert hash(phone) == hash(same)
    assert len({phone, same}) == 1
    changed = dataclasses.replace(phone, model="SIP-T54W")
    assert changed != phone
    assert phone.model == "SIP-T46S"
    assert not hasattr(phone, "__dict__")  # slots, as before


def test_phones_with_equal_calls_are_equal() -> None:
    """Tuples of records compare field by field: what `call_changed` relies on."""
    when = datetime(2026, 11, 26, 8, 40, tzinfo=UTC)
    call = Call("c1", CallState.RINGING, None, "200", None, None, None, when, None, when)
    a = Phone(device="x", calls=(call,))
    b = Phone(device="x", calls=(dataclasses.replace(call),))
    assert a == b
    assert a != Phone(device="x", calls=(dataclasses.replace(call, state=CallState.TALKING),))


@dataclasses.dataclass
class Plain:
    a: int
    b: int = dataclasses.field(init=False, default=0)
    field: int = 0


def test_replace_rebuilds_every_frozen_record_as_dataclasses_replace_does(tmp_path: Path) -> None:
    """`bridge.frozen.replace`, the hit path's fast `dataclasses.replace`: the same record for
    each field of each `@frozen` class, the same refusal of a field it does not have, and mypy
    checks the fields named in its calls as it does for `dataclasses.replace`."""
    for module, name in frozen_classes():
        cls = getattr(importlib.import_module(module), name)
        names = [f.name for f in dataclasses.fields(cls)]
        record = cls(*(f"value of {n}" for n in names))  # any value: nothing checks them
        for at, field in enumerate(names):
            changed = replace(record, **{field: at})
            assert type(changed) is cls
            assert changed == dataclasses.replace(record, **{field: at}), (name, field)
            assert getattr(changed, field) == at
            assert getattr(record, field) == f"value of {field}"
        with pytest.raises(TypeError, match="no_such_field"):
            replace(record, no_such_field=1)
    plain = Plain(1, field=2)  # any other dataclass: dataclasses.replace, init=False fields and all
    assert (replace(plain, a=3), plain) == (Plain(3, field=2), Plain(1, field=2))
    snippet = tmp_path / "replaces.py"
    snippet.write_text(
        "from bridge.calls import Phone\nfrom bridge.frozen import replace\n"
        "replace(Phone(device='x'), no_such_field=1)\n"
    )
    out, _, status = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    assert status == 1
    assert re.search(r'replaces\.py:3: error: Unexpected keyword argument "no_such_field"', out), out

"""Caller names from a contacts file: CSV (`number,name`) or vCard (docs/contacts.md).

Numbers in the file and numbers from the phones are both normalised, then matched exactly:

1. A leading `tel:` is dropped; a `(0)` after an international prefix (`+49 (0)30 …`) is dropped.
2. Spaces, tabs, no-break spaces, dashes, dots, parentheses and `/` are removed.
3. The result is kept as it is when it starts with `+`, has at most 6 characters (internal
   extensions like `100`), or is not all ASCII digits (`*21#`, `anonymous`).
4. `00` at the start becomes `+`.
5. With `country_code` `+1` (NANP): `011` at the start becomes `+`; 10 digits get `+1` in front;
   11 digits starting with `1` get `+` in front.
6. With any other `country_code`: a leading trunk `0` is replaced by the country code
   (`030 1234567` with `+49` becomes `+49301234567`); Italy (`+39`) keeps the `0`, as it is part
   of the number there.
7. Anything else (a local number without area code, any national number when `country_code` is
   empty) is kept as it is.

A number listed twice keeps its first name. `ContactsFile.refresh()` re-reads the file only when
its modification time, size or inode changed; a broken file keeps the contacts in use.
"""

import csv
import io
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

log = logging.getLogger(__name__)

SHORT_NUMBER = 6
TRUNK_ZERO_KEPT = frozenset({"+39"})
COUNTRY_CODE = re.compile(r"(\+[1-9][0-9]{0,3})?")
DROPPED = str.maketrans("", "", " \t\u00a0-./()")
ZERO_IN_PARENS = re.compile(r"\(\s*0\s*\)")
DIALLABLE = re.compile(r"\+?[0-9*#]*[0-9][0-9*#]*")
VCARD_SUFFIXES = frozenset({".vcf", ".vcard"})
DELIMITERS = ",;\t"


class ContactsError(Exception):
    """A contacts file that cannot be used; names the file and the line."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{self.path}: line {line}: {problem}" if line else f"{self.path}: {problem}")


def normalise_number(raw: str, country_code: str = "") -> str:
    """The form a number is matched in (rules in the module docstring)."""
    text = raw.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    if "(" in text and text.startswith(("+", "00")):
        text = ZERO_IN_PARENS.sub("", text, count=1)
    text = text.translate(DROPPED)
    digits = text[1:] if text.startswith("+") else text
    if not (digits.isascii() and digits.isdigit()) or text.startswith("+") or len(text) <= SHORT_NUMBER:
        return text
    if text.startswith("00"):
        return "+" + text[2:]
    if country_code == "+1":
        if text.startswith("011"):
            return "+" + text[3:]
        if len(text) == 10:
            return "+1" + text
        if len(text) == 11 and text[0] == "1":
            return "+" + text
    elif country_code and text[0] == "0":
        return country_code + (text if country_code in TRUNK_ZERO_KEPT else text[1:])
    return text


def check_country_code(country_code: str) -> None:
    if not COUNTRY_CODE.fullmatch(country_code):
        raise ValueError(f"contacts.country_code: {country_code!r} is not empty or like '+49'")


def clean_name(raw: str) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())


@dataclass(frozen=True, slots=True)
class Contacts:
    """Names by normalised number; immutable, so a refresh swaps the whole object."""

    names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    country_code: str = ""

    @classmethod
    def load(cls, path: Path, country_code: str) -> "Contacts":
        """Read a CSV or vCard file; raises OSError, or ContactsError naming the line."""
        check_country_code(country_code)
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ContactsError(path, data[: err.start].count(b"\n") + 1, "not UTF-8") from err
        names: dict[str, str] = {}
        for number, name in read_entries(path, text):
            key = normalise_number(number, country_code)
            if key:
                names.setdefault(key, name)
        return cls(MappingProxyType(names), country_code)

    def lookup(self, number: str | None) -> str | None:
        """The name for a number as a phone reports it, or None."""
        if not number:
            return None
        return self.names.get(normalise_number(number, self.country_code))

    def __len__(self) -> int:
        return len(self.names)


def read_entries(path: Path, text: str) -> Iterator[tuple[str, str]]:
    """(number, name) of every entry, in file order."""
    is_vcard = path.suffix.lower() in VCARD_SUFFIXES or (
        path.suffix.lower() != ".csv" and text.lstrip()[:11].upper() == "BEGIN:VCARD"
    )
    return read_vcard(path, text) if is_vcard else read_csv(path, text)


# ---- CSV ------------------------------------------------------------------------------------


def is_number(value: str) -> bool:
    return DIALLABLE.fullmatch(normalise_number(value)) is not None


def sniff_delimiter(text: str) -> str:
    """The delimiter that turns the most sample lines into `number,name`; `,` on a tie."""
    sample = [line for line in text.split("\n", 50)[:50] if line.strip()][:20]
    best, best_score = ",", 0
    for delimiter in DELIMITERS:
        try:
            score = sum(
                1
                for row in csv.reader(sample, delimiter=delimiter)
                if len(row) >= 2 and is_number(row[0]) and row[1].strip()
            )
        except csv.Error:
            continue
        if score > best_score:
            best, best_score = delimiter, score
    return best


def read_csv(path: Path, text: str) -> Iterator[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text), strict=True)
    first = True
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            number = row[0].strip()
            if first and not is_number(number):
                first = False
                continue  # a header row
            first = False
            if not is_number(number):
                raise ContactsError(path, line, f"{number[:40]!r} is not a phone number")
            name = clean_name(row[1]) if len(row) >= 2 else ""
            if not name:
                raise ContactsError(path, line, "no name (expected number,name)")
            yield number, name
    except csv.Error as err:
        raise ContactsError(path, reader.line_num, f"bad CSV: {err}") from err


# ---- vCard ----------------------------------------------------------------------------------


def unfold(text: str) -> Iterator[tuple[int, str]]:
    """Logical lines (RFC 6350 §3.2: a line starting with a space or tab continues the last)."""
    start, current = 0, ""
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if line[:1] in (" ", "\t") and start:
            current += line[1:]
            continue
        if start:
            yield start, current
        start, current = number, line
    if start:
        yield start, current


def split_property(line: str) -> tuple[str, str] | None:
    """(upper-case name without group, value) of `[group.]NAME[;params]:value`."""
    quoted = False
    for index, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == ":" and not quoted:
            name = line[:index].split(";", 1)[0].rsplit(".", 1)[-1].strip().upper()
            return name, line[index + 1 :]
    return None


def split_value(value: str, separator: str | None = None) -> list[str]:
    """Components of a (structured) value, with `\\,`, `\\;`, `\\\\` and `\\n` unescaped."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append(" " if ch in "nN" else ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def card_name(properties: Mapping[str, str]) -> str:
    if "FN" in properties:
        name = clean_name(" ".join(split_value(properties["FN"])))
        if name:
            return name
    if "N" in properties:
        family, given, additional, *_ = [*split_value(properties["N"], ";"), "", "", ""]
        name = clean_name(f"{given} {additional} {family}")
        if name:
            return name
    return clean_name(split_value(properties.get("ORG", ""), ";")[0])


def read_vcard(path: Path, text: str) -> Iterator[tuple[str, str]]:
    begun = 0
    properties: dict[str, str] = {}
    tels: list[str] = []
    for line, content in unfold(text):
        if not content.strip():
            continue
        parsed = split_property(content)
        if parsed is None:
            raise ContactsError(path, line, "not a vCard property (no ':')")
        name, value = parsed
        marker = value.strip().upper()
        if name == "BEGIN" and marker == "VCARD":
            if begun:
                raise ContactsError(path, line, f"BEGIN:VCARD inside the card of line {begun}")
            begun, properties, tels = line, {}, []
        elif not begun:
            raise ContactsError(path, line, "outside BEGIN:VCARD … END:VCARD")
        elif name == "END" and marker == "VCARD":
            person = card_name(properties)
            for tel in tels:
                if person and is_number(tel):
                    yield tel, person
            begun = 0
        elif name == "TEL":
            tels.append(split_value(value, ";")[0])
        else:
            properties.setdefault(name, value)
    if begun:
        raise ContactsError(path, begun, "card has no END:VCARD")


# ---- the file in use ------------------------------------------------------------------------

Stamp = tuple[int, int, int]


class ContactsFile:
    """The contacts of one file, re-read by `refresh()` when the file changes.

    No I/O until the first `refresh()`. `contacts` is swapped as a whole, so `lookup` may run on
    another thread than `refresh`.
    """

    def __init__(self, path: Path | str | None, country_code: str = "") -> None:
        check_country_code(country_code)
        self.path = Path(path) if path else None
        self.country_code = country_code
        self.contacts = Contacts(country_code=country_code)
        self.stamp: Stamp | None = None
        self.warned = ""

    def lookup(self, number: str | None) -> str | None:
        return self.contacts.lookup(number)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the contacts in use changed."""
        if self.path is None:
            return False
        try:
            stat = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return self.drop(f"contacts file {self.path} not found; no caller names from it")
        except OSError as err:
            self.warn(f"contacts file {self.path}: {err.strerror}; keeping {len(self.contacts)} numbers")
            return False
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self.stamp:
            return False
        try:
            contacts = Contacts.load(self.path, self.country_code)
        except FileNotFoundError:
            return self.drop(f"contacts file {self.path} not found; no caller names from it")
        except OSError as err:
            self.warn(f"contacts file {self.path}: {err.strerror}; keeping {len(self.contacts)} numbers")
            return False
        except ContactsError as err:
            self.stamp = stamp  # not re-read, and not warned about again, until it changes
            self.warn(f"contacts file {err}; keeping the {len(self.contacts)} numbers in use")
            return False
        self.stamp, self.contacts, self.warned = stamp, contacts, ""
        log.info("contacts: %d numbers from %s", len(contacts), self.path)
        return True

    def drop(self, problem: str) -> bool:
        self.stamp = None
        self.warn(problem)
        changed = len(self.contacts) > 0
        self.contacts = Contacts(country_code=self.country_code)
        return changed

    def warn(self, problem: str) -> None:
        if problem != self.warned:
            log.warning("%s", problem)
            self.warned = problem

import logging
import os
from pathlib import Path

import pytest

from bridge.contacts import Contacts, ContactsError, ContactsFile, normalise_number

BERLIN = ["+49 30 1234567", "0049301234567", "030/123 45 67", "(030) 1234567", "+49 (0)30 123-45-67"]
NANP = ["+1 (555) 123-4567", "555-123-4567", "15551234567", "555.123.4567", "011 1 555 123 4567"]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding, newline="")
    return path


def load(tmp_path: Path, name: str, text: str, country_code: str = "") -> Contacts:
    return Contacts.load(write(tmp_path / name, text), country_code)


@pytest.mark.parametrize(
    ("raw", "country_code", "expected"),
    [
        ("+49 30 1234567", "+49", "+49301234567"),
        ("0049301234567", "+49", "+49301234567"),
        ("030/123 45 67", "+49", "+49301234567"),
        ("(030) 1234567", "+49", "+49301234567"),
        ("+49 (0)30 1234567", "+49", "+49301234567"),
        ("tel:+49-30-1234567", "+49", "+49301234567"),
        ("030 1234567", "", "0301234567"),
        ("0049301234567", "", "+49301234567"),
        ("06 12345678", "+39", "+390612345678"),
        ("+1 (555) 123-4567", "+1", "+15551234567"),
        ("555-123-4567", "+1", "+15551234567"),
        ("15551234567", "+1", "+15551234567"),
        ("011 49 30 1234567", "+1", "+49301234567"),
        ("555-123-4567", "+49", "5551234567"),
        ("123-4567", "+1", "1234567"),
        ("100", "+49", "100"),
        ("0123", "+49", "0123"),
        ("*21#", "+49", "*21#"),
        ("anonymous", "+49", "anonymous"),
    ],
)
def test_normalise_number(raw: str, country_code: str, expected: str) -> None:
    assert normalise_number(raw, country_code) == expected
    assert normalise_number(expected, country_code) == expected


@pytest.mark.parametrize(
    ("forms", "country_code"),
    [(BERLIN, "+49"), (NANP, "+1"), (["100", " 100 "], "+49"), (["100"], "+1")],
)
def test_every_written_form_finds_every_other(tmp_path: Path, forms: list[str], country_code: str) -> None:
    for stored in forms:
        contacts = load(tmp_path, "contacts.csv", f'"{stored}",Alice\n', country_code)
        for asked in forms:
            assert contacts.lookup(asked) == "Alice", (stored, asked)


def test_national_numbers_need_the_country_code(tmp_path: Path) -> None:
    contacts = load(tmp_path, "contacts.csv", "+49 30 1234567,Alice\n")
    assert contacts.lookup("+49301234567") == "Alice"
    assert contacts.lookup("0301234567") is None


def test_unknown_and_empty_numbers_have_no_name(tmp_path: Path) -> None:
    contacts = load(tmp_path, "contacts.csv", "100,Reception\n+49 30 1234567,Alice\n", "+49")
    assert contacts.lookup("101") is None
    assert contacts.lookup("0301234568") is None
    assert contacts.lookup("") is None
    assert contacts.lookup(None) is None
    assert contacts.lookup("anonymous") is None


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("number,name\n100,Reception\n+49 30 1234567,Alice\n", "utf-8"),
        ("100,Reception\r\n+49 30 1234567,Alice\r\n", "utf-8"),
        ("Nummer;Name\n100;Reception\n+49 30 1234567;Alice\n", "utf-8-sig"),
        ("100;Reception\n+49 30 1234567;Alice\n", "utf-8-sig"),
        ("100\tReception\n+49 30 1234567\tAlice\n", "utf-8"),
        ("Phone 1,name,company\n100,Reception,ACME\n\n# friends\n+49 30 1234567,Alice,\n", "utf-8"),
        ('"number","name"\n"100","Reception"\n"+49 30 1234567","Alice"\n', "utf-8-sig"),
    ],
    ids=[
        "header",
        "no-header-crlf",
        "semicolon-bom",
        "semicolon-no-header",
        "tab",
        "extra-columns",
        "quoted",
    ],
)
def test_csv_layouts(tmp_path: Path, text: str, encoding: str) -> None:
    contacts = Contacts.load(write(tmp_path / "contacts.csv", text, encoding), "+49")
    assert len(contacts) == 2
    assert contacts.lookup("100") == "Reception"
    assert contacts.lookup("030 1234567") == "Alice"


def test_csv_names_keep_commas_and_accents(tmp_path: Path) -> None:
    semicolons = load(tmp_path, "a.csv", "\ufeff030 1234567;Müller, Hans\n030 7654321;Ørsted\n", "+49")
    assert semicolons.lookup("+49301234567") == "Müller, Hans"
    assert semicolons.lookup("+49307654321") == "Ørsted"
    commas = load(tmp_path, "b.csv", '030 1234567,"Müller, Hans"\n', "+49")
    assert commas.lookup("+49301234567") == "Müller, Hans"


def test_a_number_listed_twice_keeps_its_first_name(tmp_path: Path) -> None:
    contacts = load(tmp_path, "contacts.csv", "+49 30 1234567,Alice\n030 1234567,Bob\n", "+49")
    assert len(contacts) == 1
    assert contacts.lookup("0301234567") == "Alice"


VCARD = (
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "FN:Alice Example-\r\n"
    " Longname\r\n"
    "N:Example;Alice;;;\r\n"
    "TEL;TYPE=cell:+49 170\r\n"
    "\t1234567\r\n"
    "TEL;TYPE=work,voice:030 1234567\r\n"
    "item1.TEL:0049 30 7654321\r\n"
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "VERSION:4.0\r\n"
    "N:Smith;Bob;J.;;\r\n"
    'TEL;VALUE=uri;TYPE="voice,home":tel:+1-555-123-4567;ext=12\r\n'
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "FN:Doe\\, Jane\r\n"
    "TEL:100\r\n"
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "ORG:ACME Corp;Sales\r\n"
    "TEL:+1 555 000 1111\r\n"
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "TEL:+1 555 999 9999\r\n"
    "END:VCARD\r\n"
)


@pytest.mark.parametrize("name", ["contacts.vcf", "contacts.VCARD", "export.txt"])
def test_vcard_folded_lines_and_several_numbers(tmp_path: Path, name: str) -> None:
    contacts = load(tmp_path, name, VCARD, "+49")
    assert contacts.lookup("01701234567") == "Alice Example-Longname"
    assert contacts.lookup("+49301234567") == "Alice Example-Longname"
    assert contacts.lookup("030 7654321") == "Alice Example-Longname"
    assert contacts.lookup("+15551234567") == "Bob J. Smith"
    assert contacts.lookup("100") == "Doe, Jane"
    assert contacts.lookup("+15550001111") == "ACME Corp"
    assert contacts.lookup("+15559999999") is None
    assert len(contacts) == 6


def test_vcard_with_lf_line_ends_and_bom(tmp_path: Path) -> None:
    text = "\ufeffBEGIN:VCARD\nFN:Alice\nTEL;CELL:555-123-\n 4567\nEND:VCARD\n"
    contacts = load(tmp_path, "contacts.vcf", text, "+1")
    assert contacts.lookup("+1 555 123 4567") == "Alice"


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        ("c.csv", "number,name\n100,Reception\nhello,World\n", 3, "not a phone number"),
        ("c.csv", "100,Reception\n101\n", 2, "no name"),
        ("c.csv", "100,Reception\n101,\n", 2, "no name"),
        ("c.csv", '100,Reception\n101,"Broken\n', 2, "bad CSV"),
        ("c.vcf", "BEGIN:VCARD\nFN:A\nTEL:100\nEND:VCARD\nBEGIN:VCARD\nFN:B\n", 5, "no END:VCARD"),
        ("c.vcf", "BEGIN:VCARD\nFN:A\nBEGIN:VCARD\n", 3, "inside the card of line 1"),
        ("c.vcf", "BEGIN:VCARD\nFN:A\nthis is not vcard\nEND:VCARD\n", 3, "no ':'"),
        ("c.vcf", "BEGIN:VCARD\nFN:A\nEND:VCARD\nTEL:100\n", 4, "outside BEGIN:VCARD"),
    ],
)
def test_a_broken_file_names_its_line(tmp_path: Path, name: str, text: str, line: int, problem: str) -> None:
    with pytest.raises(ContactsError, match=problem) as caught:
        load(tmp_path, name, text)
    assert caught.value.line == line
    assert f"line {line}" in str(caught.value)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes("100,Reception\n101,Müller\n".encode("latin-1"))
    with pytest.raises(ContactsError, match="not UTF-8") as caught:
        Contacts.load(path, "")
    assert caught.value.line == 2


def test_a_bad_country_code_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="country_code"):
        ContactsFile(tmp_path / "contacts.csv", "49")


def touch(path: Path, text: str, mtime: int) -> None:
    write(path, text)
    os.utime(path, ns=(mtime, mtime))


T0 = 1_700_000_000_000_000_000


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "bridge.contacts"
    ]


def test_refresh_reads_the_file_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    touch(path, "100,Reception\n", T0)
    contacts = ContactsFile(path, "+49")
    assert contacts.lookup("100") is None  # nothing read before the first refresh
    assert contacts.refresh() is True
    assert contacts.lookup("100") == "Reception"
    assert contacts.refresh() is False

    touch(path, "100,Front desk\n", T0 + 1_000_000_000)
    assert contacts.refresh() is True
    assert contacts.lookup("100") == "Front desk"
    assert len(contacts.contacts) == 1

    touch(path, "101,Front desk\n", T0 + 2_000_000_000)  # same size, new time
    assert contacts.refresh() is True
    assert contacts.lookup("100") is None
    assert contacts.lookup("101") == "Front desk"
    assert contacts.refresh() is False


def test_a_broken_file_keeps_the_old_contacts_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "contacts.csv"
    touch(path, "100,Reception\n030 1234567,Alice\n", T0)
    contacts = ContactsFile(path, "+49")
    assert contacts.refresh() is True

    touch(path, "100,Reception\n030 1234567\n", T0 + 1_000_000_000)
    with caplog.at_level(logging.WARNING):
        assert contacts.refresh() is False
        assert contacts.refresh() is False
    assert contacts.lookup("+49301234567") == "Alice"
    [warning] = warnings_in(caplog)
    assert "line 2" in warning
    assert str(path) in warning

    touch(path, "100,Reception\n030 1234567,Alice Example\n", T0 + 2_000_000_000)
    assert contacts.refresh() is True
    assert contacts.lookup("+49301234567") == "Alice Example"


def test_a_missing_file_gives_no_names_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "contacts.csv"
    contacts = ContactsFile(path, "+49")
    with caplog.at_level(logging.WARNING):
        assert contacts.refresh() is False
        assert contacts.refresh() is False
    assert len(contacts.contacts) == 0
    assert contacts.lookup("100") is None
    [warning] = warnings_in(caplog)
    assert "not found" in warning

    touch(path, "100,Reception\n", T0)
    assert contacts.refresh() is True
    assert contacts.lookup("100") == "Reception"

    path.unlink()
    assert contacts.refresh() is True
    assert contacts.lookup("100") is None
    assert contacts.refresh() is False


def test_a_broken_first_file_gives_no_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "contacts.vcf"
    touch(path, "BEGIN:VCARD\nFN:Alice\nTEL:100\n", T0)
    contacts = ContactsFile(path)
    with caplog.at_level(logging.WARNING):
        assert contacts.refresh() is False
    assert contacts.lookup("100") is None
    [warning] = warnings_in(caplog)
    assert "line 1" in warning


def test_no_contacts_file_configured() -> None:
    contacts = ContactsFile("", "+49")
    assert contacts.refresh() is False
    assert contacts.lookup("100") is None

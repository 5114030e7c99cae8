"""User profiles: TOML files in `profiles.dir` that add a phone type or change a built-in one.

`<dir>/<type>.toml` defines phone type `<type>`. It starts from a built-in profile (`base`,
else the built-in of the same name, else `generic`) and replaces or adds what it sets: event
and parameter aliases, the Action URLs to paste, and the dial and command request templates.
The format is described in docs/phone-control.md.
"""

import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from bridge.commands import COMMANDS
from bridge.events import PARAMS, normalise_event
from bridge.phone_commands import (
    AuthKind,
    CommandSet,
    RequestTemplate,
    TemplateError,
    fields_of,
    parse_template,
)
from bridge.profiles import BUILTIN_PROFILES, EventUrl, Profile

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
TOP_KEYS = {"vendor", "base", "setup_steps", "setting_separator", "event_aliases", "param_aliases",
            "event_urls", "control", "commands"}  # fmt: skip
CONTROL_KEYS = {"auth", "success_status", "error_body", "keys", "refused_hint", "setup_lines", "setup_steps"}
REQUEST_KEYS = {"method", "url", "form", "xml"}


class ProfileError(Exception):
    """A user profile file that cannot be used: names the file and the key."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, " ".join(problem.splitlines())
        super().__init__(f"{self.path}: {key}: {self.problem}" if key else f"{self.path}: {self.problem}")


def profile_names(directory: str) -> frozenset[str]:
    """The phone types the profile files in a directory define (their names, not yet checked)."""
    if not directory:
        return frozenset()
    return frozenset(path.stem.lower() for path in Path(directory).glob("*.toml"))


def load_profiles(directory: str) -> Mapping[str, Profile]:
    """Built-in profiles plus those of the files in `directory` (none when it is "")."""
    profiles = dict(BUILTIN_PROFILES)
    if directory:
        folder = Path(directory)
        if not folder.is_dir():
            raise ProfileError(folder, "", "not a directory (profiles.dir)")
        for path in sorted(folder.glob("*.toml")):
            profile = read_profile(path)
            profiles[profile.name] = profile
    return MappingProxyType(profiles)


def read_profile(path: Path) -> Profile:
    name = path.stem.lower()
    if not NAME.fullmatch(name):
        raise ProfileError(path, "", "the file name must be the phone type: a-z, 0-9, '_', '-' (up to 32)")
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProfileError(path, "", str(err)) from err
    try:
        return build_profile(name, data)
    except ProfileError as err:
        raise ProfileError(path, err.key, err.problem) from err
    except TemplateError as err:
        raise ProfileError(path, "commands", str(err)) from err


def build_profile(name: str, data: Mapping[str, object]) -> Profile:
    unknown(data, TOP_KEYS, "")
    base_name = text(data, "base", name if name in BUILTIN_PROFILES else "generic")
    base = BUILTIN_PROFILES.get(base_name)
    if base is None:
        raise ProfileError(
            "", "base", f"{base_name!r} is not a built-in phone type ({', '.join(BUILTIN_PROFILES)})"
        )
    event_aliases = dict(base.event_aliases)
    for alias, target in strings(data, "event_aliases").items():
        kind = normalise_event(target)[1]
        if kind is None:
            raise ProfileError("", f"event_aliases.{alias}", f"{target!r} is not an event name")
        event_aliases[alias.lower().replace("_", "").replace("-", "")] = kind.value
    param_aliases = dict(base.param_aliases)
    canonical = set(PARAMS.values()) - {"token"}
    for alias, target in strings(data, "param_aliases").items():
        if target not in canonical:
            raise ProfileError("", f"param_aliases.{alias}", f"must be one of {', '.join(sorted(canonical))}")
        param_aliases[alias.lower()] = target
    return replace(
        base,
        name=name,
        vendor=text(data, "vendor", base.vendor if base_name == name else name),
        event_aliases=MappingProxyType(event_aliases),
        param_aliases=MappingProxyType(param_aliases),
        event_urls=event_urls(data, base.event_urls),
        setup_steps=string_list(data, "setup_steps", base.setup_steps),
        setting_separator=text(data, "setting_separator", base.setting_separator),
        commands=command_set(data, base.commands),
    )


def event_urls(data: Mapping[str, object], base: tuple[EventUrl, ...]) -> tuple[EventUrl, ...]:
    urls = {url.event: url for url in base}
    for event, value in table(data, "event_urls").items():
        key = f"event_urls.{event}"
        entry = table({key: value}, key)
        unknown(entry, {"setting", "query"}, key)
        kind = normalise_event(event)[1]
        urls[event if kind is None else kind.value] = EventUrl(
            event if kind is None else kind.value,
            text(entry, "setting", event, key),
            text(entry, "query", "", key),
        )
    return tuple(urls.values())


def command_set(data: Mapping[str, object], base: CommandSet) -> CommandSet:
    control = table(data, "control")
    unknown(control, CONTROL_KEYS, "control")
    requests = dict(base.requests)
    for name, value in table(data, "commands").items():
        if name not in COMMANDS:
            raise ProfileError("", f"commands.{name}", f"not a command; one of {', '.join(COMMANDS)}")
        found = request_templates(value, f"commands.{name}")
        if found:
            requests[name] = found
        else:
            requests.pop(name, None)  # an empty list removes a built-in command
    auth = text(control, "auth", base.auth.value, "control")
    if auth not in {a.value for a in AuthKind}:
        raise ProfileError("", "control.auth", "must be http or passcode")
    statuses = control.get("success_status", sorted(base.success))
    if not isinstance(statuses, list) or not all(isinstance(s, int) and 100 <= s <= 599 for s in statuses):
        raise ProfileError(
            "", "control.success_status", "must be a list of HTTP status codes, like [200, 302]"
        )
    error_body = text(control, "error_body", base.error_body, "control")
    try:
        re.compile(error_body)
    except re.error as err:
        raise ProfileError("", "control.error_body", f"not a regular expression: {err}") from err
    return replace(
        base,
        requests=MappingProxyType(requests),
        keys=frozenset(string_list(control, "keys", tuple(base.keys), "control")),
        success=frozenset(statuses),
        error_body=error_body,
        auth=AuthKind(auth),
        refused_hint=text(control, "refused_hint", base.refused_hint, "control"),
        setup_lines=string_list(control, "setup_lines", base.setup_lines, "control"),
        setup_steps=string_list(control, "setup_steps", base.setup_steps, "control"),
    )


def request_templates(value: object, key: str) -> tuple[RequestTemplate, ...]:
    items = value if isinstance(value, list) else [value]
    found = []
    for item in items:
        try:
            if isinstance(item, str):
                found.append(parse_template(item))
            elif isinstance(item, dict):
                found.append(request_table(item, key))
            else:
                raise ProfileError(
                    "", key, 'must be a request like "GET /path?a={number}", a table, or a list'
                )
        except TemplateError as err:
            raise ProfileError("", key, str(err)) from err
    return tuple(found)


def request_table(item: Mapping[str, object], key: str) -> RequestTemplate:
    unknown(item, REQUEST_KEYS, key)
    form = {name: value for name, value in table(item, "form", key).items()}
    xml = text(item, "xml", "", key)
    method = text(item, "method", "POST" if form or xml else "GET", key).upper()
    template = parse_template(f"{method} {text(item, 'url', '/', key)}")
    fields = []
    for name, value in form.items():
        if not isinstance(value, str):
            raise ProfileError("", f"{key}.form.{name}", "must be a string")
        fields_of(value)
        fields.append((name, value))
    fields_of(xml)
    if (form or xml) and method != "POST":
        raise ProfileError("", f"{key}.method", "a request with a body must be POST")
    return replace(template, form=tuple(fields), xml=xml)


# ---- typed access to parsed TOML ---------------------------------------------------------------


def unknown(data: Mapping[str, object], known: set[str], prefix: str) -> None:
    for name in data:
        if name not in known:
            where = f"{prefix}.{name}" if prefix else name
            raise ProfileError("", where, f"unknown key; known: {', '.join(sorted(known))}")


def table(data: Mapping[str, object], name: str, prefix: str = "") -> Mapping[str, object]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ProfileError("", f"{prefix}.{name}" if prefix else name, "must be a table")
    return value


def text(data: Mapping[str, object], name: str, default: str, prefix: str = "") -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise ProfileError("", f"{prefix}.{name}" if prefix else name, "must be a string")
    return value


def strings(data: Mapping[str, object], name: str) -> dict[str, str]:
    return {key: text(table(data, name), key, "", name) for key in table(data, name)}


def string_list(
    data: Mapping[str, object], name: str, default: tuple[str, ...], prefix: str = ""
) -> tuple[str, ...]:
    value = data.get(name, list(default))
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProfileError("", f"{prefix}.{name}" if prefix else name, "must be a list of strings")
    return tuple(value)

"""URIs that choose a backend: ``scheme://[user[:password]@]host[:port][/path][?k=v&...][#fragment]``.

For file-like schemes (``file``, ``hdf5``, ``pickled``) the location is ``host + path``: ``file://runs/db.json``
is the relative path ``runs/db.json`` and ``file:///abs/db.json`` (three slashes) is absolute, as is
``file:/abs/db.json``; track read ``file://dir/x.json`` as ``/x.json``. IPv6 hosts go in brackets
(``socket://[::1]:8123``). ``str()`` of a parsed URI hides the password; :meth:`ParsedURI.to_uri` gives it back.
A parsed URI also reads as track's dict (``u["scheme"]``, ``u["address"]``, ``u["query"]["backend"]``, the port
as text), so code written for track's ``parse_uri`` keeps working.

Example:
    >>> u = parse_uri("socket://ann:s3cret@[::1]:8123?timeout_s=5&backend=file://x.json")
    >>> u.host, u.port, u.option("backend"), str(u)
    ('::1', 8123, 'file://x.json', 'socket://ann:***@[::1]:8123?timeout_s=5&backend=file%3A%2F%2Fx.json')
    >>> parse_uri("file://runs/db.json").file_path, parse_uri("file:///abs/db.json").file_path
    ('runs/db.json', '/abs/db.json')
    >>> u["scheme"], u["address"], u["port"], u["query"]["backend"]
    ('socket', '::1', '8123', 'file://x.json')
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from unitrack.errors import InvalidURIError

__all__ = ["ParsedURI", "parse_options", "parse_uri"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST = re.compile(r"[^\s/?#@\[\]]*")


@dataclass(frozen=True)
class ParsedURI:
    """A parsed backend URI. ``options`` keeps the order and repeats of ``?k=v`` pairs."""

    scheme: str
    username: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    path: str = ""
    options: tuple[tuple[str, str], ...] = ()
    fragment: str = ""
    has_authority: bool = True

    @property
    def file_path(self) -> str:
        """The location for file-like schemes: ``host + path`` (absolute only with ``///`` or ``:/``)."""
        return self.host + self.path if self.has_authority else self.path

    @property
    def options_dict(self) -> dict[str, str]:
        """Options as a dict (the last value wins for a repeated key)."""
        return dict(self.options)

    def option(self, name: str, default: str | None = None) -> str | None:
        """Return the last value of option ``name``, or ``default``."""
        value = default
        for key, val in self.options:
            if key == name:
                value = val
        return value

    def _authority(self, password: str | None) -> str:
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if password is not None:
                auth += ":" + password
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return auth + host + port

    def _render(self, password: str | None) -> str:
        text = f"{self.scheme}:"
        if self.has_authority:
            text += "//" + self._authority(password)
        text += self.path
        if self.options:
            text += "?" + urlencode(self.options, quote_via=quote, safe="")
        if self.fragment:
            text += "#" + quote(self.fragment, safe="")
        return text

    def to_uri(self) -> str:
        """The full URI, password included: ``parse_uri(u.to_uri()) == u``."""
        password = None if self.password is None else quote(self.password, safe="")
        return self._render(password)

    def redacted(self) -> str:
        """The URI with its password replaced by ``***`` (safe to log)."""
        return self._render(None if self.password is None else "***")

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"ParsedURI({self.redacted()!r})"

    # track's parse_uri returned a dict; the same keys read here: scheme, path, query (a dict), fragment,
    # params, and with an authority address, port (text), username and password when given.
    def as_dict(self) -> dict[str, Any]:
        """The URI as track's ``parse_uri`` dict."""
        out: dict[str, Any] = {
            "scheme": self.scheme,
            "path": self.path,
            "query": self.options_dict,
            "fragment": self.fragment,
            "params": "",
        }
        if self.has_authority and (self.host or self.port is not None or self.username is not None):
            out["address"] = self.host
            if self.port is not None:
                out["port"] = str(self.port)
            if self.username is not None:
                out["username"] = self.username
            if self.password is not None:
                out["password"] = self.password
        return out

    def __getitem__(self, key: str) -> Any:
        try:
            return self.as_dict()[key]
        except KeyError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """``uri[key]``, or ``default`` when the URI has no such part (track's ``dict.get``)."""
        return self.as_dict().get(key, default)

    def keys(self) -> list[str]:
        """The keys of :meth:`as_dict`."""
        return list(self.as_dict())

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())


def parse_options(options: str) -> dict[str, str]:
    """Parse ``a=1&b=2`` into ``{'a': '1', 'b': '2'}`` (values may contain ``=``).

    Raises:
        InvalidURIError: for an item without ``=``.
    """
    return dict(_parse_options(options, options))


def _parse_options(text: str, uri: str) -> list[tuple[str, str]]:
    if not text:
        return []
    pairs: list[tuple[str, str]] = []
    for item in text.split("&"):
        if "=" not in item:
            raise InvalidURIError(uri, f"option {item!r} is not of the form key=value")
        pairs.extend(parse_qsl(item, keep_blank_values=True))
    return pairs


def parse_uri(uri: str) -> ParsedURI:
    """Parse a backend URI.

    Raises:
        InvalidURIError: naming the URI and what is wrong (no scheme, bad port, unclosed IPv6 bracket...).
    """
    if not isinstance(uri, str):
        raise InvalidURIError(repr(uri), f"a URI is a str, not {type(uri).__name__}")
    if "\x00" in uri or any(c in uri for c in "\r\n"):
        raise InvalidURIError(uri, "contains a NUL or newline character")
    scheme, sep, rest = uri.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise InvalidURIError(uri, "expected scheme://location, e.g. file://runs/db.json or hdf5://runs")
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    has_authority = rest.startswith("//")
    username = password = None
    host, port, path = "", None, rest
    if has_authority:
        netloc, slash, tail = rest[2:].partition("/")
        path = slash + tail
        userinfo, at, hostport = netloc.rpartition("@")
        if at:
            user, colon, pw = userinfo.partition(":")
            username = unquote(user)
            password = unquote(pw) if colon else None
        else:
            hostport = netloc
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise InvalidURIError(uri, "an IPv6 host opened with '[' is not closed with ']'")
            host, after = hostport[1:end], hostport[end + 1 :]
            if after and not after.startswith(":"):
                raise InvalidURIError(uri, f"unexpected {after!r} after the IPv6 host")
            port_text = after[1:] if after else None
        else:
            head, colon, tail_port = hostport.rpartition(":")
            host, port_text = (head, tail_port) if colon else (hostport, None)
            if port_text == "":
                port_text = None
        if port_text is not None:
            if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
                raise InvalidURIError(uri, f"port {port_text!r} is not a number from 0 to 65535")
            port = int(port_text)
        if not _HOST.fullmatch(host) and not (":" in host and hostport.startswith("[")):
            raise InvalidURIError(uri, f"host {host!r} contains characters not allowed in a host")
    options = tuple(_parse_options(query, uri))
    return ParsedURI(
        scheme=scheme.lower(),
        username=username,
        password=password,
        host=host,
        port=port,
        path=path,
        options=options,
        fragment=unquote(fragment),
        has_authority=has_authority,
    )


def option_flag(uri: ParsedURI, name: str, default: bool) -> bool:
    """Read a boolean option (``true/false/1/0/yes/no``).

    Raises:
        InvalidURIError: for any other value.
    """
    value = uri.option(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidURIError(uri.redacted(), f"option {name}={value!r} is not true or false")


def option_float(uri: ParsedURI, name: str, default: float) -> float:
    """Read a number option.

    Raises:
        InvalidURIError: when it is not a number.
    """
    value = uri.option(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise InvalidURIError(uri.redacted(), f"option {name}={value!r} is not a number") from exc


def as_uri(value: Any) -> ParsedURI:
    """Accept a URI string or an already parsed URI."""
    return value if isinstance(value, ParsedURI) else parse_uri(value)

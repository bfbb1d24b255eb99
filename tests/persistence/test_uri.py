"""URI parsing: the grammar, its round trip (hypothesis) and its errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import InvalidURIError, MissingDependencyError, UnknownSchemeError
from unitrack.persistence.registry import Backend, get_protocol, register
from unitrack.persistence.uri import ParsedURI, parse_options, parse_uri


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file://runs/db.json", "runs/db.json"),  # relative: track made this /db.json
        ("file:///abs/db.json", "/abs/db.json"),
        ("file:/abs/db.json", "/abs/db.json"),
        ("file:db.json", "db.json"),
        ("file://db.json", "db.json"),
        ("pickled://dir/db.pkl", "dir/db.pkl"),  # track kept only 'dir'
        ("hdf5://~/runs", "~/runs"),
    ],
)
def test_file_paths(uri: str, path: str) -> None:
    assert parse_uri(uri).file_path == path


def test_network_uri_with_credentials_ipv6_and_options() -> None:
    u = parse_uri("socket://root:123456@[::1]:8123?backend=file://test.json&test=2&eq=a=b")
    assert (u.scheme, u.username, u.password, u.host, u.port) == ("socket", "root", "123456", "::1", 8123)
    assert u.options_dict == {"backend": "file://test.json", "test": "2", "eq": "a=b"}
    assert "123456" not in str(u) and "123456" not in repr(u)
    assert "***" in str(u)
    assert parse_uri(u.to_uri()) == u


def test_percent_encoded_password_round_trips() -> None:
    u = parse_uri("postgresql://ann:p%40ss%3Aw0rd@db.example:5432/track")
    assert u.password == "p@ss:w0rd" and u.path == "/track"
    assert parse_uri(u.to_uri()) == u


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("no-scheme-here", "expected scheme://"),
        ("1http://x", "expected scheme://"),
        ("socket://host:99999", "port '99999'"),
        ("socket://host:12ab", "port '12ab'"),
        ("socket://ho st:1", "host"),
        ("socket://[::1:8123", "not closed"),
        ("file://x.json?flag", "key=value"),
        ("file://x\x00.json", "NUL"),
    ],
)
def test_malformed_uris_raise_invalid_uri_error(uri: str, fragment: str) -> None:
    with pytest.raises(InvalidURIError, match=fragment):
        parse_uri(uri)


def test_parse_options() -> None:
    assert parse_options("a=1&b=x=y") == {"a": "1", "b": "x=y"}


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownSchemeError, match=r"no backend for scheme 'hfd5' in 'hfd5://runs'; known: .*file"
    ):
        get_protocol("hfd5://runs")


def test_unknown_scheme_never_falls_back_to_a_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidURIError):
        get_protocol("none")  # track wrote a file named 'none'
    with pytest.raises(UnknownSchemeError):
        get_protocol("none://x")
    assert list(tmp_path.iterdir()) == []


def test_register_refuses_to_overwrite_silently() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("file", lambda uri: None)  # type: ignore[arg-type,return-value]


def test_missing_optional_package_names_the_extra() -> None:
    register("needsextra", Backend("no_such_module_xyz:Proto", extra="postgres"), replace=True)
    with pytest.raises(
        MissingDependencyError, match=r"needsextra:// needs: pip install 'unitrack\[postgres\]'"
    ):
        get_protocol("needsextra://x")


_text = st.text(
    alphabet=st.characters(blacklist_characters="\x00\r\n", blacklist_categories=("Cs",)), max_size=12
)
_host = st.one_of(
    st.just(""),
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["::1", "fe80::1", "2001:db8::7"]),
)
_path = st.one_of(st.just(""), st.from_regex(r"(/[A-Za-z0-9._~=-]{1,8}){1,3}", fullmatch=True))


@st.composite
def parsed_uris(draw: st.DrawFn) -> ParsedURI:
    has_user = draw(st.booleans())
    host = draw(_host)
    return ParsedURI(
        scheme=draw(st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True)),
        username=draw(_text) if has_user else None,
        password=draw(st.one_of(st.none(), _text)) if has_user else None,
        host=host,
        port=draw(st.one_of(st.none(), st.integers(0, 65535))) if host else None,
        path=draw(_path),
        options=tuple(draw(st.lists(st.tuples(_text.filter(bool), _text), max_size=3))),
        fragment=draw(_text),
    )


@given(parsed_uris())
def test_parse_of_to_uri_round_trips(u: ParsedURI) -> None:
    assert parse_uri(u.to_uri()) == u
    assert u.password is None or u.password == "" or "***" in str(u)


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_invalid_uri_error(text: str) -> None:
    try:
        parse_uri(text)
    except InvalidURIError:
        pass

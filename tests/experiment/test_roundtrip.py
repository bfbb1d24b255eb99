"""Hypothesis: parameters survive class source → docstring → --help → params.yml → from_yml."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_counter = itertools.count()

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn")), max_size=20
)
VALUES = {
    "int": st.integers(min_value=-(10**12), max_value=10**12),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "str": TEXT,
    "bool": st.booleans(),
    "list": st.lists(st.integers(min_value=-1000, max_value=1000), max_size=4),
}


@st.composite
def declarations(draw):
    names = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=5, unique=True)
    )
    out = []
    for name in names:
        type_name = draw(st.sampled_from(sorted(VALUES)))
        default = draw(VALUES[type_name])
        override = draw(VALUES[type_name])
        help_text = draw(TEXT).strip()
        out.append((f"p_{name}", type_name, default, override, help_text))
    return out


def build_class(folder: Path, decls):
    lines = [
        "from unitrack.experiment import Experiment",
        "",
        "",
        "class Gen(Experiment):",
        '    """Generated."""',
        "",
    ]
    for name, type_name, default, _, help_text in decls:
        lines.append(f"    {name}: {type_name} = {default!r}  # @p {help_text}")
    module_name = f"_generated_experiment_{next(_counter)}"
    path = folder / f"{module_name}.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.Gen, module_name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declarations())
def test_parameters_round_trip(decls):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        Gen, module_name = build_class(folder, decls)
        try:
            # class definition
            assert {n: (p.type, p.default, p.help) for n, p in Gen._params.items()} == {
                name: (t, default, help_text) for name, t, default, _, help_text in decls
            }
            # docstring and --help
            expected_lines = [
                f"    {name}: {t}={default!s}" + (f" ~ {help_text}" if help_text else "")
                for name, t, default, _, help_text in decls
            ]
            for line in expected_lines:
                assert line in Gen.__doc__.splitlines()
            out = io.StringIO()
            with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
                Gen().main(["--help"])
            for line in expected_lines:
                assert line in out.getvalue().splitlines()
            # params.yml and from_yml
            overrides = {name: override for name, _, _, override, _ in decls}
            ex = Gen(str(folder / "root"), "ex1", backend="ephemeral://", **overrides)
            loaded = Gen().from_yml(str(folder / "root" / "ex1" / "params.yml"))
            assert loaded.params() == ex.params() == overrides
            assert loaded.status == "registered"
        finally:
            sys.modules.pop(module_name, None)

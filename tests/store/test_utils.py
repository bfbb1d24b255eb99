from __future__ import annotations

import argparse
import json
import pickle

import pytest

from unitrack.errors import ConfigError, SchemaError
from unitrack.store import utils
from unitrack.store.utils import (
    Parameters,
    consistent,
    has_tensorboard,
    mkdirp,
    obj_to_string,
    override_json,
    string_to_obj,
)


def test_utils_is_a_thin_reexport():
    assert utils.Parameters.__module__ == "unitrack.store.params"
    assert utils.obj_to_string.__module__ == "unitrack.store.serialization"


def test_parameters_case_insensitive():
    ps = Parameters({"a": 1, "b": 3, "LR": 0.1})
    assert (ps.A, ps.b, ps.lr, ps.missing) == (1, 3, 0.1, None)
    ps.C = 4
    assert ps.as_dict()["c"] == 4 and "C" in ps and len(ps) == 4
    assert json.loads(str(ps))["a"] == 1
    assert pickle.loads(pickle.dumps(ps)).A == 1
    with pytest.raises(ConfigError, match="differ only in case"):
        Parameters({"a": 1, "A": 2})


def test_consistent():
    assert consistent(None, 2) == 2
    assert consistent(2, 2) == 2
    with pytest.raises(ConfigError):
        consistent(1, 2)


def test_override_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"lr": 0.5, "epochs": 3, "config_path": "x"}))
    args = argparse.Namespace(lr=None, epochs=10, extra=None, config_path=None)
    out = override_json(args, path)
    assert (out.lr, out.epochs, out.extra) == (0.5, 10, None)
    assert args.lr is None  # not changed
    with pytest.raises(ConfigError, match="only in the arguments: \\['extra'\\]"):
        override_json(args, path, check_consistency=True)


def test_obj_strings():
    assert string_to_obj(obj_to_string({"a": (1, 2)})) == {"a": (1, 2)}
    assert string_to_obj(None) is None and string_to_obj("") is None and string_to_obj(5) == 5
    with pytest.raises(SchemaError, match="Cannot decode"):
        string_to_obj("not base64 !!")


def test_fs_helpers(tmp_path):
    mkdirp(tmp_path / "a" / "b")
    mkdirp(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    mkdirp(tmp_path / "file" / "sub")  # cannot be created: never raises
    assert not has_tensorboard(tmp_path)
    (tmp_path / "tensorboard").mkdir()
    assert has_tensorboard(tmp_path)

"""Write ``db.json``: a track ``file://`` database exactly as track's FileProtocol commits one.

track (github.com/Delaunay/track) is not on PyPI and no longer imports (``filelock.logger`` is gone), so this
script reproduces what its code writes, step by step, for this session::

    client = TrackClient('file://db.json')
    client.set_project(name='vision', description='image models')
    client.set_group(name='lr-sweep')
    for lr in (0.1, 0.01):
        client.new_trial(force=True)
        client.log_arguments(lr=lr, epochs=2, model='resnet')
        with client:
            for epoch in range(2):
                with client.chrono('epoch'):
                    ...
                client.log_metrics(step=epoch, loss=..., acc=...)
            client.log_metrics(final=...)        # no step: a time series
    # the second trial raised, so it is recorded as an Exception with its error

What is reproduced, from track's source:

- ``LocalStorage.commit``: ``json.dump(objects, output, indent=2)`` of the top-level projects only, each holding
  its trials (full) and groups (``trials`` as uid lists), in ``track.serialization.to_json`` form;
- ``Trial`` JSON: ``dtype, uid (hash_revision), revision, hash, name, description, version, tags, group_id,
  project_id, parameters, metadata, metrics, chronos, errors, status{value, name}``;
- ``compute_hash(name, version, **parameters)``: sha256 over the non-None arguments (str as UTF-8, a float packed
  as ``d``, an int below 256 as one byte, other ints packed as ``I``), then each parameter's key and value;
  a group's uid is ``compute_hash(name, project_id)``, a project's its name;
- metrics logged with a step are ``{step: value}`` dicts (steps become JSON strings), without a step a list;
- ``chronos``: ``runtime`` is a ValueAggregator (seconds, a float), ``epoch`` a StatAggregator
  (``StatStream.to_dict()``: avg, min, max, sd, count, unit);
- ``metadata``: ``_update_count`` (writes since creation) and ``_last_change`` (epoch seconds).

Run ``python tests/data/track/make_db.py`` to rewrite ``tests/data/track/db.json``.
"""

import hashlib
import json
import os
import struct
import sys


def compute_hash(*args, **kwargs):
    def encode(item):
        if isinstance(item, str):
            return item.encode("utf8")
        if isinstance(item, float):
            return struct.pack("d", item)
        if isinstance(item, int) and 0 <= item < 256:
            return bytes([item])
        return struct.pack("I", item)

    sha256 = hashlib.sha256()
    for arg in args:
        if arg is not None:
            sha256.update(encode(arg))
    for k, v in kwargs.items():
        if v is not None:
            sha256.update(encode(k))
            sha256.update(encode(v))
    return sha256.hexdigest()


def stat(values, drop_first_obs=1):
    """track.utils.stat.StatStream(drop_first_obs).to_dict() after update(v) for each value."""
    kept = values[drop_first_obs - 1 :] if drop_first_obs else values  # track kept one more (SEED_NOTES C31)
    first = kept[0]
    shifted = [v - first for v in kept]
    count = max(len(values) - drop_first_obs, 1)
    mean = sum(shifted) / count
    var = sum(s * s for s in shifted) / count - mean * mean
    return {
        "avg": mean + first,
        "min": min(kept),
        "max": max(kept),
        "sd": var**0.5,
        "count": count,
        "unit": "s",
    }


def trial(name, lr, project_id, group_id, status, errors, last_change):
    parameters = {"lr": lr, "epochs": 2, "model": "resnet"}
    version = 0  # track's default_version_hash() returned 0
    digest = compute_hash(name, version, **parameters)
    losses = [1.0 / (1 + e) * (1 + lr) for e in range(2)]
    metrics = {
        "loss": {str(e): losses[e] for e in range(2)},
        "acc": {str(e): 0.5 + 0.2 * e for e in range(2)},
    }
    if status["name"] == "Completed":
        metrics["final"] = [losses[-1]]
    return {
        "dtype": "trial",
        "uid": f"{digest}_0",
        "revision": 0,
        "hash": digest,
        "name": name,
        "description": None,
        "version": version,
        "tags": {},
        "group_id": group_id,
        "project_id": project_id,
        "parameters": parameters,
        "metadata": {"_update_count": 11, "_last_change": last_change},
        "metrics": metrics,
        "chronos": {"runtime": 12.5, "epoch": stat([6.5, 6.0, 6.25])},
        "errors": errors,
        "status": status,
    }


def make(path):
    project = "vision"
    group_uid = compute_hash("lr-sweep", project)
    trials = [
        trial("lr-0.1", 0.1, project, group_uid, {"value": 302, "name": "Completed"}, [], 1574099825.25),
        trial(
            "lr-0.01",
            0.01,
            project,
            group_uid,
            {"value": 202, "name": "Exception"},
            ["<class 'RuntimeError'>"],
            1574099901.5,
        ),
    ]
    objects = [
        {
            "dtype": "project",
            "uid": project,
            "name": project,
            "description": "image models",
            "metadata": {},
            "trials": trials,
            "groups": [
                {
                    "dtype": "trial_group",
                    "uid": group_uid,
                    "name": "lr-sweep",
                    "description": None,
                    "metadata": {},
                    "project_id": project,
                    "trials": [t["uid"] for t in trials],
                }
            ],
        }
    ]
    with open(path, "w") as output:
        json.dump(objects, output, indent=2)


if __name__ == "__main__":
    make(
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.join(os.path.dirname(os.path.abspath(__file__)), "db.json")
    )

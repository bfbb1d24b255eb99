import pytest

from unitrack.errors import ConfigError
from unitrack.monitor import Monitor, XmenMessenger
from unitrack.monitor.hooks import Probe

from .conftest import Sink


def test_example_1_variables_to_several_experiments():
    messenger = XmenMessenger("y.*->ex.*@10s")
    m = Monitor(hooks=[messenger])
    y1, y2 = 0, 0
    ex1, ex2 = Sink(), Sink()
    seen = []
    for i in m(range(40)):
        y1 += 1
        y2 += 2
        if i % 10 == 1:
            seen.append([ex.messages.get(k) for ex in (ex1, ex2) for k in ("y1", "y2")])
    assert seen == [
        [None, None, None, None],
        [10, 20, 10, 20],
        [20, 40, 20, 40],
        [30, 60, 30, 60],
    ]


def test_example_2_keep_min_with_leader():
    ex = Sink()
    m = Monitor(hooks=[XmenMessenger("^y$|^i$->^ex$@10s", keep="min", leader="^y$")])
    x = -50
    seen = []
    for i in m(range(100)):
        x += 1
        y = x**2
        if i % 10 == 1:
            seen.append([ex.messages.get(k) for k in ("i", "y")])
    assert y and seen == [[None, None], [9, 1600], [19, 900], [29, 400], [39, 100]] + [[49, 0]] * 5


def test_example_3_expand_dict():
    ex = Sink()
    m = Monitor(hooks=[XmenMessenger("z->^ex$@10s", keep="min", leader="y", expand=True)])
    z = {"x": 5, "y": 10}
    seen = []
    for i in m(range(100)):
        z["i"] = i
        z["x"] += 1
        z["y"] = z["x"] ** 2
        if i % 10 == 1:
            seen.append([ex.messages.get(k) for k in ("i", "y", "x")])
    assert seen == [[None, None, None]] + [[9, 225, 15]] * 9


def test_example_4_expand_and_prepend():
    ex = Sink()
    m = Monitor(hooks=[XmenMessenger("z->^ex$@10s", keep="min", leader="z_y", expand=True, prepend=True)])
    z = {"x": 5, "y": 10}
    seen = []
    for i in m(range(100)):
        z["i"] = i
        z["x"] += 1
        z["y"] = z["x"] ** 2
        if i % 10 == 1:
            seen.append([ex.messages.get(k) for k in ("z_i", "z_y", "z_x")])
    assert seen == [[None, None, None]] + [[9, 225, 15]] * 9


@pytest.mark.parametrize("prepend", [None, False])
def test_prepend_none_or_false_does_not_prefix(prepend):
    ex = Sink()
    m = Monitor(hooks=[XmenMessenger("z->ex@1s", expand=True, prepend=prepend)])
    z = {"k": 1}
    for _ in m(range(1)):
        pass
    assert z and ex.messages["k"] == 1 and "z_k" not in ex.messages


def test_experiment_only_form_sends_timing_and_counters():
    ex = Sink()
    m = Monitor(hooks=[XmenMessenger("^ex$@5s")])
    loss = 1
    for _ in m(range(10)):
        pass
    assert loss and ex.messages["s"] == "10/10" and "wall" in ex.messages and "loss" not in ex.messages


def test_monitor_msg_options_per_spec():
    a, b = Sink(), Sink()
    m = Monitor(msg=("u->^a$@1s", "v->^b$@1s"), msg_keep=("max", "min"))
    u = v = 0
    for i in m(range(5)):
        u = v = (i - 2) ** 2  # noqa: F841 - read from the frame by the Monitor
    assert (a.messages["u"], b.messages["v"]) == (4, 0)


def test_objects_without_message_are_not_experiments():
    m = Monitor(hooks=[XmenMessenger("y->ex@1s")])
    y, ex = 1, "not an experiment"
    for _ in m(range(2)):
        pass
    assert (y, ex) == (1, "not an experiment")


def test_bad_keep_is_a_config_error():
    with pytest.raises(ConfigError, match="keep must be one of"):
        XmenMessenger("y->ex@1s", keep="median")


def test_probe_writes_to_log_metadata_when_available(out):
    class MetaSink:
        def __init__(self):
            self.meta = []

        def log_metadata(self, values):
            self.meta.append(values)

    ex = MetaSink()
    m = Monitor(hooks=[Probe("ex@2s")], stream=out)
    for _ in m(range(4)):
        pass
    assert len(ex.meta) == 2 and "sys/proc/memory_mb" in ex.meta[0]
    assert out.getvalue().count("cpu=") == 2

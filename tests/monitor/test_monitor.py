import logging
import sys

import pytest

from unitrack.errors import ConfigError, InvalidSpecError
from unitrack.monitor import Hook, Logger, Monitor, TorchMonitor
from unitrack.monitor.spec import UnknownTriggerError

from .conftest import Sink, fixed_clock

T = "01:17PM 18/11/20"


class Recorder(Hook):
    def __init__(self, spec):
        super().__init__(spec)
        self.calls = []

    def __call__(self, var_dict, monitor):
        self.calls.append((monitor.step, monitor.epoch, dict(var_dict)))


def test_nested_loops_count_from_the_inside_out_and_never_reset():
    m = Monitor()
    for _ in m(range(3)):
        for _ in m(range(5)):
            pass
    assert (m.step, m.epoch, m.era) == (15, 3, 0)
    assert m.triggers == {"step": 15, "epoch": 3, "era": 0, "eon": 0, "supereon": 0}


def test_torch_monitor_is_monitor_and_counts_steps_and_epochs():
    assert TorchMonitor is Monitor
    dataset = [(i, i + 1) for i in range(7)]
    m = TorchMonitor()
    for _ in m(range(10)):
        for _x, _y in m(dataset):
            pass
    assert m.step == len(dataset) * 10
    assert m.epoch == 10


def test_logger_example_prints_whole_values(out):
    # Seed 003, Logger example; the originals dropped the last character (SEED_NOTES C3): 'cat|dog', 5 decimals.
    m = Monitor(
        hooks=[Logger("x@2s", process_func=lambda x: "|".join(x)), Logger("y@1e", format=".5f")],
        stream=out,
        clock=fixed_clock,
    )
    x = ["cat", "dog"]
    y = 0.0
    for _ in m(range(3)):
        for i in m(range(5)):
            y += i
    assert x and out.getvalue().splitlines() == [
        f"[{T} 0/3 2/15]: x = cat|dog",
        f"[{T} 0/3 4/15]: x = cat|dog",
        f"[{T} 1/3]: y = 10.00000",
        f"[{T} 1/3 6/15]: x = cat|dog",
        f"[{T} 1/3 8/15]: x = cat|dog",
        f"[{T} 1/3 10/15]: x = cat|dog",
        f"[{T} 2/3]: y = 20.00000",
        f"[{T} 2/3 12/15]: x = cat|dog",
        f"[{T} 2/3 14/15]: x = cat|dog",
        f"[{T} 3/3]: y = 30.00000",
    ]


def test_logger_writes_to_stdout_by_default(capsys):
    m = Monitor(log="loss@1s", clock=fixed_clock)
    loss = 0.5
    for _ in m(range(1)):
        pass
    assert loss and capsys.readouterr().out == f"[{T} 1/1]: loss = 0.5\n"


def identity(x):
    return x


def mult(x):
    return 10 * x


def _five_levels(out):
    X = Sink()
    a, b, c, d, e, f = 0, 0, 0, 0, 0, 0
    m = Monitor(
        log=("a|b@2s", "b@1e", "c@1er", "d|e@1eo", "e@1se"),
        log_fn=(mult, identity, identity, identity, identity),
        log_format=".3f",
        msg="a->X@1s",
        time=("@2s", "@1e"),
        probe="X@10s",
        limit="@20s",
        stream=out,
        clock=fixed_clock,
        timer=lambda: 0.0,
    )
    for _ in m(range(2)):
        for _ in m(range(2)):
            for _ in m(range(3)):
                for _ in m(range(4)):
                    for _ in m(range(5)):
                        a += 1
                    b += 1
                c += 1
            d += 1
        e += 1
    return m, X, (a, b, c, d, e, f)


def test_five_level_example_with_limit(out):
    m, X, values = _five_levels(out)
    # Limit '@20s': the innermost loop stops before step 21; outer loops finish their iteration (hooks fire).
    assert values == (20, 5, 2, 1, 1, 0)
    assert m.triggers == {"step": 20, "epoch": 5, "era": 2, "eon": 1, "supereon": 1}
    lines = out.getvalue().splitlines()
    logged = [line for line in lines if " = " in line and "cpu=" not in line]
    step_lines = [
        f"[{T} 0/2 0/4 0/12 {(s - 1) // 5}/48 {s}/240]: a = {10 * s:.3f} b = {10 * ((s - 1) // 5):.3f}"
        for s in range(2, 21, 2)
    ]
    assert [line for line in logged if ": a = " in line] == step_lines
    assert [line for line in logged if ": a = " not in line] == [
        f"[{T} 0/2 0/4 0/12 1/48]: b = 1.000",
        f"[{T} 0/2 0/4 0/12 2/48]: b = 2.000",
        f"[{T} 0/2 0/4 0/12 3/48]: b = 3.000",
        f"[{T} 0/2 0/4 0/12 4/48]: b = 4.000",
        f"[{T} 0/2 0/4 1/12]: c = 1.000",
        f"[{T} 0/2 0/4 1/12 5/48]: b = 5.000",
        f"[{T} 0/2 0/4 2/12]: c = 2.000",
        f"[{T} 0/2 1/4]: d = 1.000 e = 0.000",
        f"[{T} 1/2]: e = 1.000",
    ]
    limit = lines.index(f"[{T} 0/2 0/4 1/12 4/48 20/240]: ---- Limit reached for step 20 ----")
    assert lines[limit - 1].endswith("c = 1.000") or "wall=" in lines[limit - 1]
    assert lines[limit + 1] == f"[{T} 0/2 0/4 1/12 5/48]: b = 5.000"
    # Timer lines at every 2nd step and every epoch; Probe lines at steps 10 and 20.
    assert sum("wall=0:00:00" in line for line in lines) == 10 + 5
    assert sum(line.startswith(f"[{T}") and "cpu=" in line for line in lines) == 2
    # The messenger sent 'a' every step; the probe wrote resource use.
    assert X.messages["a"] == 20
    assert X.messages["s"] == "20/240"
    assert "sys/proc/memory_mb" in X.messages and "sys/cpu_percent" in X.messages


def test_later_loops_after_a_limit_yield_nothing(out):
    m = Monitor(limit="@3s", stream=out, clock=fixed_clock)
    assert list(m(range(10))) == [0, 1, 2]
    assert list(m(range(10))) == []
    assert out.getvalue().splitlines()[-1] == (
        f"[{T}]: ---- Stop Criterion @ step=3, epoch=0, era=0, eon=0, supereon=0 ----"
    )


def test_limit_list_first_reached_wins(out):
    m = Monitor(limit=["@2e", "@100s"], stream=out, clock=fixed_clock)
    for _ in m(range(10)):
        for _ in m(range(3)):
            pass
    assert (m.step, m.epoch) == (6, 2)
    assert "---- Limit reached for epoch 2 ----" in out.getvalue()


def test_limit_with_a_regex_is_a_config_error():
    with pytest.raises(ConfigError, match="limit"):
        Monitor(limit="x@2s")


def test_hooks_get_matching_locals_of_the_calling_frame():
    hook = Recorder("^lo")
    rec = Recorder("^lo.*@2s")
    m = Monitor(hooks=[rec, hook])
    loss, lower, other = 1.0, 2, 3  # noqa: F841 - read from the frame by the Monitor
    for i in m(range(4)):
        loss = float(i)  # noqa: F841 - read from the frame by the Monitor
    assert other == 3
    assert rec.calls == [(2, 0, {"loss": 1.0, "lower": 2}), (4, 0, {"loss": 3.0, "lower": 2})]
    assert hook.calls == []
    m.to_hooks(loss=5, x=1)
    assert hook.calls == [(4, 0, {"loss": 5})]


def test_selection_is_cached_per_set_of_local_names():
    rec = Recorder("x@1s")
    m = Monitor(hooks=[rec])
    x = 0
    for _ in m(range(50)):
        x += 1
    (entry,) = m._by_level[0]
    assert len(entry.cache) == 1
    assert rec.calls[-1] == (50, 0, {"x": 50})


def test_hook_order_is_log_time_msg_probe_then_user_hooks(out):
    order = []

    class Mark(Hook):
        def __call__(self, var_dict, monitor):
            order.append("user")

    class OrderSink(Sink):
        def message(self, values, keep="latest", leader=None):
            order.append("msg")

    m = Monitor(
        hooks=[Mark("@1s")], log="v@1s", msg="v->ex@1s", time="@1s", stream=out, clock=fixed_clock, quiet=True
    )
    v, ex = 1, OrderSink()
    stream_write = out.write
    out.write = lambda s: (order.append("time" if "wall=" in s else "log"), stream_write(s))[1]
    for _ in m(range(1)):
        pass
    assert (v, ex) and order == ["log", "time", "msg", "msg", "user"]


def test_inc_increments_and_fires_hooks():
    rec = Recorder("z@2e")
    m = Monitor(hooks=[rec])
    z = "zz"
    m.inc("e")
    m.inc("epoch")
    assert m.epoch == 2 and rec.calls == [(0, 2, {"z": z})]
    with pytest.raises(UnknownTriggerError):
        m.inc("week")


def test_modulo():
    m = Monitor()
    assert m.modulo("step", 5)
    assert not m.modulo("s", 5, exclude_1st=True)
    for _ in m(range(10)):
        pass
    assert m.modulo("step", 5, exclude_1st=True) and not m.modulo("step", 3)


def test_summary_lists_running_loops_outermost_first():
    m = Monitor(clock=fixed_clock, timer=lambda: 0.0)
    seen = []
    for _ in m(range(2)):
        for _ in m(range(3)):
            seen.append(m.summary(verbose=1))
    assert seen[-1]["last"] == T
    assert (seen[0]["e"], seen[0]["s"]) == ("0/2", "0/6")
    assert (seen[-1]["e"], seen[-1]["s"]) == ("1/2", "5/6")
    assert {"wall", "end", "next", "step", "m_step"} <= set(seen[-1])
    assert "e" not in m.summary()


def test_log_formats_and_prefixes(out):
    m = Monitor(stream=out, clock=fixed_clock)
    m.log("hello")
    m.log(3.14159, format=".2f", process_func=float)
    assert out.getvalue().splitlines() == [f"[{T}]: hello", f"[{T}]: 3.14"]


def test_log_fn_list_of_wrong_length_names_the_parameter():
    with pytest.raises(ConfigError, match="log_fn has 1 entries but log has 2 spec") as info:
        Monitor(log=("a@1s", "b@1s"), log_fn=[str])
    assert info.value.parameter == "log_fn"


def test_bad_spec_in_monitor_raises_invalid_spec_error():
    with pytest.raises(InvalidSpecError, match="'loss@'"):
        Monitor(log="loss@")


def test_failing_hook_is_logged_once_and_training_continues(caplog):
    class Broken(Hook):
        def __call__(self, var_dict, monitor):
            raise RuntimeError("boom")

    m = Monitor(hooks=[Broken("@1s")])
    with caplog.at_level(logging.DEBUG, logger="unitrack.monitor"):
        for _ in m(range(5)):
            pass
    assert m.step == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info[0] is RuntimeError
    assert "training continues" in errors[0].getMessage()


def test_break_out_of_inner_loop_keeps_levels_right():
    m = Monitor()
    for _ in m(range(3)):
        for j in m(range(10)):
            if j == 1:
                break
    assert (m.step, m.epoch) == (3, 3)


def test_monitor_imports_neither_torch_nor_tensorboardx():
    import subprocess

    code = "import sys, unitrack.monitor, unitrack.monitor.hooks; print('torch' in sys.modules, 'tensorboardX' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"

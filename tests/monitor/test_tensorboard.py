import numpy as np
import pytest
import torch

from unitrack.errors import ConfigError
from unitrack.monitor import Monitor, TensorboardLogger
from unitrack.monitor.grid import make_grid
from unitrack.monitor.hooks.tensorboard import close_writers


def _events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    close_writers()
    acc = EventAccumulator(
        str(directory / "tensorboard"),
        size_guidance={"images": 0, "scalars": 0, "tensors": 0, "histograms": 0},
    )
    acc.Reload()
    return acc


def test_scalars_read_back_with_tags_steps_values(tmp_path):
    m = Monitor(tmp_path, sca=["^loss$@2s", "^z$@4s"], sca_pref=["", "p/"])
    z = {"a": 1.0}
    for i in m(range(8)):
        loss = torch.tensor([i, i + 2.0])  # not a scalar: its mean is written
        z["a"] = i * 10.0
    acc = _events(tmp_path)
    assert loss is not None and set(acc.Tags()["scalars"]) == {"loss", "p/z_a"}
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(2, 2.0), (4, 4.0), (6, 6.0), (8, 8.0)]
    assert [(e.step, e.value) for e in acc.Scalars("p/z_a")] == [(4, 30.0), (8, 70.0)]


def test_images_histograms_and_text(tmp_path):
    m = Monitor(
        tmp_path,
        img="^x$@2s",
        img_options={"nrow": 2},
        hist="^w$@2s",
        txt="^i$@2s",
        txt_fn=lambda i: f"Hello at step {i}",
    )
    for i in m(range(4)):  # noqa: B007 - i is read from the frame by the text hook
        x = torch.rand(3, 1, 8, 8)
        w = torch.randn(100)
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert (x, w) and tags["images"] == ["x"] and tags["histograms"] == ["w"]
    images = acc.Images("x")
    assert [e.step for e in images] == [2, 4]
    assert (images[0].width, images[0].height) == (2 * 10 + 2, 2 * 10 + 2)
    assert [e.step for e in acc.Histograms("w")] == [2, 4]
    text = [t for t in tags["tensors"] if t.startswith("i")]
    assert text and acc.Tensors(text[0])[-1].tensor_proto.string_val[0] == b"Hello at step 3"


def test_frequency_less_spec_is_a_manual_hook(tmp_path):
    m = Monitor(tmp_path, sca="^eval_")
    m.to_hooks(eval_acc=0.5, other=1.0)
    acc = _events(tmp_path)
    assert acc.Tags()["scalars"] == ["eval_acc"]


def test_list_variables_expand_by_index(tmp_path):
    hook = TensorboardLogger("scalar", "^a$@1s")
    m = Monitor(tmp_path, hooks=[hook])
    a = [1, 2]
    for _ in m(range(1)):
        pass
    assert a and sorted(_events(tmp_path).Tags()["scalars"]) == ["a_0", "a_1"]


def test_without_directory_logs_a_warning(caplog):
    m = Monitor(sca="v@1s")
    v = 1.0
    for _ in m(range(2)):
        pass
    assert v and caplog.text.count("has no directory") == 1


def test_unknown_type_or_option_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown summary type 'audio'"):
        TensorboardLogger("audio", "x@1s")
    with pytest.raises(ConfigError, match="Unknown image options \\['colour'\\]"):
        TensorboardLogger("image", "x@1s", colour=True)


def test_make_grid_layout_and_normalization():
    images = np.stack([np.full((1, 2, 2), v, np.float32) for v in (0.0, 1.0, 2.0)])
    grid = make_grid(images, nrow=2, padding=1, normalize=True)
    assert grid.shape == (3, 1 + 2 * 3, 1 + 2 * 3)
    assert grid[0, 1, 1] == 0.0 and grid[0, 1, 4] == 0.5 and grid[0, 4, 1] == 1.0
    assert grid[0, 0, 0] == 0.0 and grid[0, 4, 4] == 0.0  # padding and the empty cell
    each = make_grid(images, normalize=True, scale_each=True, range=(0.0, 4.0))
    same = make_grid(images, normalize=True, scale_each=True, value_range=(0.0, 4.0))
    assert np.array_equal(each, same) and each.max() == 0.5
    tensor = make_grid(torch.zeros(2, 3, 4, 4))
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (3, 8, 14)
    assert make_grid(torch.zeros(3, 4, 4)).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        make_grid(np.zeros((1, 1, 1, 1, 1)))

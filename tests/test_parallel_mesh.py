"""`parallel.mesh_axis_sizes` / `make_mesh`: the ('data', 'model') mesh a recipe's mesh_shape asks
for (milliseconds; meshes over several devices: tests/test_multihost.py)."""

import jax
import pytest

from cnn_jax import parallel


@pytest.mark.parametrize('shape,devices,sizes', [
    ({'data': -1, 'model': 1}, 8, (8, 1)),
    ({'data': -1, 'model': 2}, 8, (4, 2)),  # -1: the devices the other axis leaves, 8 / 2
    ({'data': 2, 'model': -1}, 8, (2, 4)),
    ({'data': 4, 'model': 2}, 8, (4, 2)),
    ({'model': 2}, 2, (1, 2)),  # a missing axis has size 1
    ({}, 1, (1, 1)),
    ({'data': -1}, 1, (1, 1)),
])
def test_axis_sizes(shape, devices, sizes):
  assert parallel.mesh_axis_sizes(shape, devices) == sizes


@pytest.mark.parametrize('shape,devices,message', [
    ({'data': -1, 'tensor': 2}, 8, r"unknown axes \['tensor'\]"),
    ({'data': -1, 'model': -1}, 8, 'at most one axis may be -1'),
    ({'data': -1, 'model': 3}, 8, 'does not divide 8 devices'),
    ({'data': 4, 'model': 1}, 8, 'needs 4 devices, but 8 are visible'),
    ({'data': 4, 'model': 4}, 8, 'needs 16 devices, but 8 are visible'),
])
def test_bad_shapes_are_explained(shape, devices, message):
  with pytest.raises(ValueError, match=message):
    parallel.mesh_axis_sizes(shape, devices)


def test_make_mesh_on_this_process_devices():
  n = len(jax.devices())
  mesh = parallel.make_mesh({'data': -1, 'model': 1})
  assert mesh.axis_names == parallel.AXES == ('data', 'model')
  assert dict(mesh.shape) == {'data': n, 'model': 1}
  with pytest.raises(ValueError, match=f'needs {2 * n} devices'):
    parallel.make_mesh({'data': 2 * n})

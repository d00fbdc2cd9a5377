"""AlexNet's two-GPU split (issue #6): `AlexNet2012(tower_axis='model')` on a ('data', 'model') mesh.

Checks, on forced CPU devices in subprocesses (8 host devices):
- model=2 with data=1, 2 and 4: logits, loss and gradients (train mode, same dropout key) equal to
  the unsplit network's for the same parameters; every kernel and bias, and its gradient, is split
  in halves over 'model' (shardings and addressable shards); the compiled program communicates over
  'model' only at conv3's input and the FC layers (activations, never a kernel).
- through train.py: three steps of `configs/alexnet.py:runlocal,split=2` on data=4 x model=2 equal
  three unsplit steps on one device; the compiled train step's collectives as documented in README;
  checkpoints restore from split into unsplit runs and the reverse.
"""

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cnn_jax import checkpoint, models, parallel
from test_trainer import finish, start  # tests/ is on sys.path under pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
BATCH = 8


def _subprocess(function: str, devices: int = 8) -> str:
  """Run `function` of this module in a fresh Python with `devices` forced CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={devices}")
  code = (f'import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]; '
          f'import test_alexnet_split; test_alexnet_split.{function}()')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  return proc.stdout


def _local_shape(shape, spec, mesh):
  return tuple(n // (mesh.shape[a] if a else 1) for n, a in zip(shape, spec))


def equivalence_worker():
  """Split (model=2, data=1/2/4) against unsplit: values, shardings, collectives."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel


  assert jax.device_count() == 8
  model = models.create('alexnet2012_tiny', 10, seed=0)
  conv3_input = jax.eval_shape(model.towers, jnp.zeros((BATCH, 67, 67, 3))).shape
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  graphdef_s, params_s, rest_s = nnx.split(
      models.create('alexnet2012_tiny', 10, seed=0, tower_axis='model'), nnx.Param, ...)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_s), strict=True):
    np.testing.assert_array_equal(a, b)  # the same network: same parameters from the same seed

  def loss_fn(params, graphdef, rest, x, y):
    model = nnx.merge(graphdef, params, rest, copy=True)
    nnx.reseed(model, dropout=jax.random.key(7))
    logits = model(x, train=True)  # dropout on: the split draws the same masks
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), logits

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=1)
  x = jax.random.normal(jax.random.key(1), (BATCH, 67, 67, 3))
  y = jnp.arange(BATCH) % 10
  (loss0, logits0), grads0 = step(params, graphdef, rest, x, y)

  for data in (1, 2, 4):
    mesh = parallel.make_mesh({'data': data, 'model': 2}, devices=jax.devices()[:2 * data])
    shardings = parallel.state_shardings(params_s, mesh)
    placed = jax.device_put(params_s, shardings)
    batch = jax.device_put((x, y), parallel.batch_sharding(mesh))
    with jax.set_mesh(mesh):
      compiled = step.lower(placed, graphdef_s, jax.device_put(rest_s, parallel.replicated(mesh)),
                            *batch).compile()
      (loss1, logits1), grads1 = compiled(placed, jax.device_put(rest_s, parallel.replicated(mesh)),
                                          *batch)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    np.testing.assert_allclose(logits1, logits0, rtol=1e-5, atol=1e-6)
    for (path, g0), g1 in zip(jax.tree_util.tree_flatten_with_path(grads0)[0],
                              jax.tree.leaves(grads1), strict=True):
      np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-6 * float(np.abs(g0).max()),
                                 err_msg=f'data={data} {jax.tree_util.keystr(path)}')

    # Each device holds one half (its tower's) of every kernel and bias, and so do the gradients.
    param_shapes = []
    for layer in LAYERS:
      for kind in ('kernel', 'bias'):
        for tree in (placed, grads1):
          array = tree[layer][kind][...]
          spec = P(*(None,) * (array.ndim - 1), 'model')
          assert array.sharding.spec == spec, (data, layer, kind, array.sharding)
          half = array.shape[-1] // 2
          for shard in array.addressable_shards:
            assert shard.data.shape == array.shape[:-1] + (half,), (layer, kind, shard.data.shape)
            model_index = int(np.argwhere(mesh.devices == shard.device)[0][1])
            assert shard.index[-1] == slice(model_index * half, (model_index + 1) * half)
        param_shapes.append(_local_shape(array.shape, spec, mesh))

    # Communication: over 'model' only the activations at conv3's input and the FC layers' inputs
    # and the logits are gathered (forward) and their gradients summed (backward).
    found = parallel.collectives(compiled.as_text(), mesh)
    counts = collections.Counter((c.kind, c.axes) for c in found)
    print(f'data={data} model=2 collectives: {dict(counts)}')
    assert {c.kind for c in found} <= {'all-gather', 'all-reduce'}, counts
    b, c2 = BATCH // data, conv3_input[-1]
    fc6_in, fc7_in = params['fc6']['kernel'].shape[0], params['fc7']['kernel'].shape[0]
    gathered = [(b,) + conv3_input[1:], (b, fc6_in), (b, fc7_in), (b, fc7_in), (b, 10)]
    summed = [(b,) + conv3_input[1:], (b, fc6_in), (b, fc7_in), (b, fc7_in)]
    model_ops = [c for c in found if c.axes == 'model']
    shapes = lambda kind: sorted(s for c in model_ops if c.kind == kind for s in c.shapes if s)
    assert shapes('all-gather') == sorted(gathered), model_ops
    assert shapes('all-reduce') == sorted(summed), model_ops
    assert counts['all-gather', 'model'] == 5, counts
    assert c2 == params['conv3']['kernel'].shape[2]
    if data > 1:  # the gradient all-reduce over 'data' carries every parameter's local half
      data_shapes = [s for c in found if c.axes == 'data' and c.kind == 'all-reduce'
                     for s in c.shapes]
      dims = lambda shapes: collections.Counter(tuple(sorted(s)) for s in shapes)  # any layout
      assert not dims(param_shapes) - dims(data_shapes), found
    assert all(c.axes in ('model', 'data') for c in found), found
  print('equivalence ok')


@pytest.mark.slow
def test_split_equals_unsplit_with_towers_sharded_and_gathers_only_where_the_paper_has_them():
  out = _subprocess('equivalence_worker')
  assert 'equivalence ok' in out


def _leaves(workdir):
  return jax.tree_util.tree_flatten_with_path(checkpoint.load_state(workdir)[1])[0]


def _assert_same_states(a, b):
  for (path, x), (path_b, y) in zip(_leaves(a), _leaves(b), strict=True):
    assert path == path_b
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_split_training_equals_unsplit_and_checkpoints_move_between_them(
    cache, tmp_path, monkeypatch):  # pylint: disable=redefined-outer-name
  config = 'configs/alexnet.py:runlocal'
  args = ['--config.num_train_steps=3', '--config.eval_every_steps=-1',
          '--config.checkpoint_every_steps=3']
  dump = tmp_path / 'hlo'
  unsplit, split = tmp_path / 'unsplit', tmp_path / 'split'
  procs = [start(cache, unsplit, *args, config=config)]
  # The child (not this process) reads XLA_FLAGS: dump its optimized train step as HLO text.
  monkeypatch.setenv('XLA_FLAGS', f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump} "
                     '--xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_step.*')
  procs.append(start(cache, split, *args, config=config + ',split=2', devices=8))
  monkeypatch.undo()
  outs = [finish(p) for p in procs]
  assert "mesh {'data': 4, 'model': 2}" in outs[1]
  _assert_same_states(unsplit, split)

  (hlo,) = dump.glob('*jit_train_step.cpu_after_optimizations.txt')
  mesh = jax.sharding.AbstractMesh((4, 2), parallel.AXES)
  found = parallel.collectives(hlo.read_text(), mesh)
  counts = collections.Counter((c.kind, c.axes) for c in found)
  print('train step collectives (data=4, model=2):', dict(counts))
  assert counts['all-gather', 'model'] == 5, found  # conv3 input, fc6/fc7/fc8 inputs, logits
  assert sum(len([s for s in c.shapes if s]) for c in found
             if c.kind == 'all-reduce' and c.axes == 'model') == 4, found  # their gradients
  grads = sum(len([s for s in c.shapes if s]) for c in found
              if c.kind == 'all-reduce' and c.axes == 'data')
  assert grads == 2 * len(LAYERS), found  # every kernel and bias gradient, over 'data'
  assert not {c.kind for c in found} - {'all-gather', 'all-reduce'}, found

  # A split checkpoint resumes unsplit (1 device) and an unsplit one split (data=1, model=2).
  shutil.copytree(split, tmp_path / 'split_to_unsplit')
  shutil.copytree(unsplit, tmp_path / 'unsplit_to_split')
  more = ['--config.num_train_steps=4', '--config.eval_every_steps=-1',
          '--config.checkpoint_every_steps=4']
  procs = [start(cache, tmp_path / 'split_to_unsplit', *more, config=config),
           start(cache, tmp_path / 'unsplit_to_split', *more, config=config + ',split=2',
                 devices=2)]
  outs = [finish(p) for p in procs]
  assert all('at step 3' in out for out in outs)
  assert "mesh {'data': 1, 'model': 2}" in outs[1]
  assert checkpoint.load_state(tmp_path / 'split_to_unsplit')[0] == 4
  _assert_same_states(tmp_path / 'split_to_unsplit', tmp_path / 'unsplit_to_split')


def test_collectives_reads_every_replica_group_notation():
  mesh = jax.sharding.AbstractMesh((2, 2), parallel.AXES)  # device p = (p // 2, p % 2)
  hlo = """
  %a = f32[4,64]{0,1} all-gather(%x), channel_id=1, replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_1'}, dimensions={1}
  %a2 = f32[8,64]{0,1} all-gather(%x), channel_id=1, replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_0'}, dimensions={0}
  %b = f32[5,5,8,32]{2,1,0,3} all-gather(%y), replica_groups=mesh['axis_0'=1,'axis_3'=2,'axis_4'=2], device_ids=([2,2]T(1,0)) {'axis_3'}, dimensions={3}
  %c = (f32[8]{0}, f32[]) all-reduce(%z, %w), replica_groups=[2,2]<=[2,2]T(1,0), to_apply=%add
  %d = f32[4,10]{1,0} all-reduce(%v), replica_groups={{0,1},{2,3}}, to_apply=%add
  %e = f32[4]{0} collective-permute(%u), source_target_pairs={{0,0},{1,2},{2,1},{3,3}}
  %f = f32[2]{0} all-reduce-start(%t), replica_groups={}, to_apply=%add
  %g = f32[2]{0} all-reduce-done(%f)
  %h = f32[2]{0} add(%g, %g), metadata={op_name="all-gather"}
"""
  found = parallel.collectives(hlo, mesh)
  assert [(c.kind, c.axes) for c in found] == [
      ('all-gather', 'model'), ('all-gather', 'data'), ('all-gather', 'model'),
      ('all-reduce', 'data'), ('all-reduce', 'model'), ('collective-permute', 'data+model'), ('all-reduce', 'data+model')]
  assert found[0].shapes == ((4, 64),) and found[3].shapes == ((8,), ())


def test_split_needs_a_mesh_with_one_device_per_tower():
  def forward():  # abstractly: no parameters are drawn, nothing is compiled
    model = models.create('alexnet2012_tiny', 10, seed=0, tower_axis='model')
    return model(jax.numpy.zeros((2, 67, 67, 3)))
  with pytest.raises(ValueError, match=r"needs a mesh with a 'model' axis of size 2.*set_mesh"):
    jax.eval_shape(forward)
  with pytest.raises(ValueError, match=r"\{'fc8': 7\} output widths are not divisible by 2"):
    models.create('alexnet2012_tiny', 7, seed=0, tower_axis='model')


def test_split_switch_in_the_recipe():
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel

  def parse(arg):
    argv = ['train.py', f'--config={REPO}/configs/alexnet.py:{arg}']
    values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=values, sys_argv=argv)
    values(argv)
    return values.config

  config = parse('runlocal,split=2')
  assert config.mesh_shape.to_dict() == {'data': -1, 'model': 2}
  assert config.model.kwargs.tower_axis == 'model' and config.model.name == 'alexnet2012_tiny'
  with pytest.raises(Exception, match='split=2 with variant=paper'):
    parse('variant=torchvision,split=2')

"""The analysis tools on tiny models: the files they write, their rows, columns and figures."""

import csv
import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from PIL import Image

from cnn_jax import evaluate, load, models
from cnn_jax.models import stats
from cnn_jax.tools import analyze, filters, predict

TINY = ('alexnet2012_tiny', 'resnet_tiny')  # LRN + dropout; BatchNorm + residuals
BATCHES = (1, 2)


def _read_csv(path):
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def _png_size(path):
  with Image.open(path) as img:
    assert img.format == 'PNG'
    return img.size


@pytest.fixture(scope='module')
def analysis(tmp_path_factory):
  """One analyze run over two tiny models, with an eval result for the first of them (fractions,
  as eval.py writes them)."""
  out = tmp_path_factory.mktemp('analysis')
  results = out / 'results.jsonl'
  results.write_text(json.dumps({'model': TINY[0], 'top1': 0.12, 'top5': 0.4, 'n': 10}) + '\n'
                     + json.dumps({'model': TINY[0], 'top1': 0.425, 'top5': 0.7, 'n': 100}) + '\n')
  analyze.main([*TINY, '--outdir', str(out), '--results', str(results), '--batch-sizes',
                ','.join(map(str, BATCHES)), '--train-batch', '2', '--repeats', '1',
                '--budget', '600'])
  return out


def test_model_table_has_one_row_per_model_with_counts_from_stats(analysis):
  # Plumbing: the table carries the counts of `stats` (themselves tested against published counts in
  # test_models_registry.py), not values of its own.
  columns, rows = _read_csv(analysis / 'analysis.csv')
  assert tuple(columns) == analyze.MODEL_COLUMNS
  assert [r['model'] for r in rows] == list(TINY)
  for r in rows:
    model = stats.abstract_model(r['model'])
    size = models.get_info(r['model']).input_size
    assert int(r['params']) == stats.count_params(model)
    assert float(r['gmacs']) == pytest.approx(stats.count_macs(model, size) / 1e9)
    assert float(r['gops']) == pytest.approx(2 * float(r['gmacs']))
    assert int(r['image_size']) == size
    assert r['status'] == 'ok'
    assert int(r['train_batch']) == 2
    assert float(r['train_images_per_s']) == pytest.approx(2e3 / float(r['train_step_ms']))
    assert float(r['train_memory_mib']) > int(r['params']) * 4 / 2**20  # params, grads, momentum


def test_accuracy_comes_from_the_last_eval_result_else_is_missing(analysis):
  _, rows = _read_csv(analysis / 'analysis.csv')
  assert float(rows[0]['top1']) == pytest.approx(42.5) and float(rows[0]['top5']) == pytest.approx(70)
  assert rows[0]['accuracy_source'] == 'own eval (results.jsonl, n=100)'
  assert rows[1]['top1'] == '' and rows[1]['accuracy_source'] == ''  # tiny: nothing published


def test_batch_table_has_every_model_and_batch_size(analysis):
  columns, rows = _read_csv(analysis / 'analysis_batches.csv')
  assert tuple(columns) == analyze.BATCH_COLUMNS
  assert [(r['model'], int(r['batch'])) for r in rows] == [(m, b) for m in TINY for b in BATCHES]
  for r in rows:
    assert r['status'] == 'ok'
    batch, forward_ms = int(r['batch']), float(r['forward_ms'])
    assert float(r['ms_per_image']) == pytest.approx(forward_ms / batch)
    assert float(r['images_per_s']) == pytest.approx(1e3 * batch / forward_ms)
  for m in TINY:  # arguments (parameters) are the same, activations grow with the batch
    mem = [float(r['memory_mib']) for r in rows if r['model'] == m]
    assert mem[0] < mem[1]


def test_markdown_tables(analysis):
  text = (analysis / 'analysis.md').read_text()
  assert text.startswith('Measured on ')
  tables = [block for block in text.split('\n\n') if block.startswith('|')]
  assert len(tables) == 3  # summary, forward time, memory
  for table, columns in zip(tables, (10, 1 + len(BATCHES), 1 + len(BATCHES))):
    lines = table.splitlines()
    assert len(lines) == 2 + len(TINY)
    assert all(line.count('|') == columns + 1 for line in lines)
    assert [line.split('|')[1].strip() for line in lines[2:]] == list(TINY)


@pytest.mark.parametrize('name', analyze.FIGURES)
def test_figures_are_pngs_of_the_expected_size(analysis, name):
  path = analysis / name
  assert path.stat().st_size > 10_000
  assert _png_size(path) == (1000, 700)  # 10 x 7 inches at 100 dpi, as the README shows them
  with Image.open(path) as img:
    assert len(np.unique(np.asarray(img.convert('L')))) > 10  # something is drawn


def test_redraw_takes_new_eval_results_without_measuring(analysis, tmp_path):
  out = tmp_path / 'copy'
  shutil.copytree(analysis, out)
  before = _read_csv(out / 'analysis_batches.csv')
  results = tmp_path / 'later.jsonl'
  results.write_text(json.dumps({'model': TINY[1], 'top1': 0.77, 'top5': 0.9}) + '\n')
  analyze.main(['--redraw', '--outdir', str(out), '--results', str(results)])
  _, rows = _read_csv(out / 'analysis.csv')
  assert float(rows[0]['top1']) == pytest.approx(42.5)
  assert float(rows[1]['top1']) == pytest.approx(77.0)
  assert rows[1]['accuracy_source'] == 'own eval (later.jsonl)'
  assert _read_csv(out / 'analysis_batches.csv') == before
  assert (out / 'analysis.md').read_text().splitlines()[0] == (
      (analysis / 'analysis.md').read_text().splitlines()[0])


def test_analyze_shows_eval_py_results_in_percent(analysis, workdir, tmp_path):
  """eval.py's own results.jsonl row (accuracy as a fraction) becomes top-1 % in analyze's tables."""
  evaluate.run(workdir=str(workdir), progress=False)  # alexnet2012_tiny, one step on digits
  results = workdir / evaluate.RESULTS_FILE
  saved = json.loads(results.read_text().splitlines()[-1])
  assert saved['model'] == TINY[0] and saved['n'] == 360
  assert 0 < saved['top1_err'] < 1  # so that a fraction and a percentage differ
  # Hand conversion of the row: accuracy % = 100 x (1 - error as a fraction).
  top1, top5 = 100 * (1 - saved['top1_err']), 100 * (1 - saved['top5_err'])
  out = tmp_path / 'copy'
  shutil.copytree(analysis, out)
  analyze.main(['--redraw', '--outdir', str(out), '--results', str(results)])
  _, rows = _read_csv(out / 'analysis.csv')
  assert float(rows[0]['top1']) == pytest.approx(top1)
  assert float(rows[0]['top5']) == pytest.approx(top5)
  assert rows[0]['accuracy_source'] == 'own eval (results.jsonl, n=360)'
  summary = (out / 'analysis.md').read_text().splitlines()[4]  # the first model's row
  assert summary.split('|')[6].strip() == f'{top1:.2f}'


def test_models_that_do_not_fit_are_reported_not_crashed_on(tmp_path, capsys):
  # alexnet2012_tiny cannot take 32 px images; resnet_tiny exceeds a 1 KiB memory limit.
  analyze.main(['alexnet2012_tiny', 'resnet_tiny', '--outdir', str(tmp_path), '--image-size', '32',
                '--batch-sizes', '1,2', '--max-memory-gib', str(2**-20)])
  _, rows = _read_csv(tmp_path / 'analysis.csv')
  assert rows[0]['status'].startswith('failed: ValueError: alexnet2012_tiny needs inputs of at least')
  assert rows[1]['status'] == 'training skipped: no forward pass measured'
  _, batches = _read_csv(tmp_path / 'analysis_batches.csv')
  assert all(r['status'] == rows[0]['status'] for r in batches[:2])
  assert all(r['status'].startswith('skipped: needs ') and 'limit 0.0 GiB' in r['status']
             for r in batches[2:])
  assert 'resnet_tiny batch 2: skipped: needs' in (tmp_path / 'analysis.md').read_text()
  for name in analyze.FIGURES:
    assert _png_size(tmp_path / name) == (1000, 700)
  assert '[2/2] resnet_tiny done' in capsys.readouterr().err  # progress


def test_time_budget_skips_larger_batches_but_measures_the_first(tmp_path):
  model = analyze.create_model('alexnet2012_tiny')
  budget = analyze.Budget(deadline=0.0)  # already spent
  rows = analyze.measure_forward(model, 67, (1, 2), repeats=1, max_bytes=2**40, budget=budget)
  assert rows[0]['status'] == 'ok' and rows[1]['status'].startswith('skipped: time budget')


def test_results_file_errors_name_the_line(tmp_path):
  bad = tmp_path / 'results.jsonl'
  bad.write_text('{"model": "alexnet", "top1": 0.5}\n\n{"top1": 0.3}\n')
  with pytest.raises(ValueError, match=r'results.jsonl:3: expected a JSON object with "model"'):
    analyze.load_results([str(bad)])
  bad.write_text('{"model": "alexnet", "top1": 56.5, "top5": 79.1}\n')  # percentages
  with pytest.raises(ValueError, match=r'results.jsonl:1: top1 and top5 must be fractions'):
    analyze.load_results([str(bad)])


def test_unknown_model_is_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    analyze.main(['alexnet2013'])
  assert 'unknown model(s) alexnet2013; known:' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# filters and predict, on checkpoints made here.


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A train.py workdir: alexnet2012_tiny trained one step on digits at 67 px."""
  from cnn_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from cnn_jax import trainer  # pylint: disable=g-import-not-at-top
  c = config_lib.apply_runlocal(config_lib.base_config(), 'alexnet2012_tiny', 67, num_train_steps=1)
  c.optimizer.update(name='sgd', lr=0.01, momentum=0.9)
  c.schedule.name = 'constant'
  path = tmp_path_factory.mktemp('workdir')
  trainer.train_and_evaluate(c, str(path))
  return path


@pytest.fixture(scope='module')
def weights_dir(tmp_path_factory):
  """A cnn_jax.convert weights directory: resnet_tiny with 1000 (ImageNet) classes."""
  from cnn_jax.convert import weights  # pylint: disable=g-import-not-at-top
  rbg = jax.random.key(0, impl='rbg')  # compiles faster than the default threefry
  model = models.create('resnet_tiny', rngs=nnx.Rngs(params=rbg, dropout=rbg))
  path = tmp_path_factory.mktemp('weights') / 'resnet_tiny'
  weights.save(str(path), 'resnet_tiny', nnx.state(model, weights.WEIGHTS), {}, source='test')
  return path


def test_kernel_grid_puts_each_tower_in_its_own_block():
  kernel = np.concatenate([np.full((3, 3, 3, 4), -1.0), np.full((3, 3, 3, 4), 1.0)], axis=-1)
  grid = filters.kernel_grid(kernel, towers=2, cols=2, scale=2)
  tile = 3 * 2
  block = 2 * (tile + filters.GAP)  # two rows of two kernels per tower
  assert grid.shape == (2 * block + filters.GAP + filters.TOWER_GAP, 2 * (tile + filters.GAP)
                        + filters.GAP, 3)
  g = filters.GAP
  assert (grid[g:g + tile, g:g + tile] == 0).all()  # tower 1: the minimum
  second = g + block + filters.TOWER_GAP
  assert (grid[second:second + tile, g:g + tile] == 255).all()  # tower 2: the maximum
  assert (grid[block + g: second] == filters.BACKGROUND).all()  # the gap between the towers


def test_filters_draws_the_trained_first_layer_in_two_towers(workdir, tmp_path, capsys):
  out = tmp_path / 'filters.png'
  filters.main(['--workdir', str(workdir), '--output', str(out), '--scale', '3'])
  # 16 kernels of 11x11 in 2 towers of 8: one row of 8 per tower.
  tile = 11 * 3 + filters.GAP
  assert _png_size(out) == (8 * tile + filters.GAP, 2 * tile + filters.GAP + filters.TOWER_GAP)
  assert 'step 1 of' in capsys.readouterr().err
  # The kernels drawn are the checkpoint's, read here straight from its Orbax `state` item.
  with ocp.StandardCheckpointer() as checkpointer:
    saved = checkpointer.restore(workdir / 'checkpoints' / '1' / 'state')
  trained = np.asarray(saved['params']['conv1']['kernel']['value'])
  assert trained.shape == (11, 11, 3, 16)
  # Plumbing: the PNG is kernel_grid of the checkpoint's kernels (kernel_grid's layout is checked by
  # hand in test_kernel_grid_puts_each_tower_in_its_own_block).
  with Image.open(out) as img:
    want = filters.kernel_grid(trained, towers=2, scale=3)
    np.testing.assert_array_equal(np.asarray(img.convert('RGB')), want)


def _digit_png(path, index):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray((d.images[index] * 15).astype(np.uint8)).resize((40, 40)).save(path)
  return int(d.target[index])


def test_predict_prints_and_draws_top5_with_true_labels(workdir, tmp_path, capsys):
  label = _digit_png(tmp_path / '7' / 'a.png', 7)  # a folder named after its class
  _digit_png(tmp_path / 'b.png', 8)
  out = tmp_path / 'pred.png'
  predict.main(['--workdir', str(workdir), '--output', str(out), str(tmp_path / '7' / 'a.png'),
                str(tmp_path / 'b.png')])
  assert label == 7
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('alexnet2012_tiny step 1 of') and lines[0].endswith('67 px')
  assert lines[1].endswith('a.png: true label 7') and lines[7].endswith('b.png: true label unknown')
  for block in (lines[2:7], lines[8:13]):
    probs = [float(line.split()[1]) for line in block]
    assert [line.split('.')[0].strip() for line in block] == ['1', '2', '3', '4', '5']
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
  assert sum('<- true' in line for line in lines[2:7]) <= 1
  w, h = predict.CELL_INCHES
  assert _png_size(out) == (round(2 * w * predict.DPI), round(h * predict.DPI))


def test_predict_with_imagenet_weights_names_classes_and_reads_labels(weights_dir, tmp_path):
  synsets = predict.imagenet_synsets()
  names = predict.class_names(None, 1000)
  assert synsets[0] == 'n01440764' and len(names) == 1000
  assert names[0] in ('tench', 'n01440764')  # English with torchvision installed, else WordNet id
  val = tmp_path / 'ILSVRC2012_val_00000001.JPEG'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)).save(val)
  train = tmp_path / 'n01443537' / 'n01443537_10.JPEG'
  train.parent.mkdir()
  Image.open(val).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(train)
  paths = [str(val), str(train)]
  # validation_labels.txt starts with n01751748 (the first validation image's synset).
  assert [predict.true_label(p, None, names) for p in paths] == [synsets.index('n01751748'), 1]
  network = load.restore(load.locate(str(weights_dir)))
  source = network.source
  assert (source.name, source.num_classes, source.image_size, source.data_config) == (
      'resnet_tiny', 1000, 32, None)
  probs, shown = predict.predict(network, paths)
  assert probs.shape == (2, 1000) and shown.shape == (2, 256, 256, 3)
  np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
  assert not np.allclose(probs[0], probs[1])  # different images, different predictions


def test_locate_errors_say_what_to_pass(tmp_path, workdir):
  with pytest.raises(FileNotFoundError, match='does not exist; pass a train.py --workdir'):
    load.locate(str(tmp_path / 'nothing'))
  with pytest.raises(FileNotFoundError, match='no checkpoint at step 5 in .* its steps'):
    load.locate(str(workdir), step=5)

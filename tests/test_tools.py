"""The analysis tools on tiny models: the files they write, their rows, columns and figures."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cnn_jax import models
from cnn_jax.models import stats
from cnn_jax.tools import analyze

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
  """One analyze run over two tiny models, with an eval result for the first of them."""
  out = tmp_path_factory.mktemp('analysis')
  results = out / 'results.jsonl'
  results.write_text(json.dumps({'model': TINY[0], 'top1': 12.0, 'top5': 40.0, 'n': 10}) + '\n'
                     + json.dumps({'model': TINY[0], 'top1': 42.5, 'top5': 70.0, 'n': 100}) + '\n')
  analyze.main([*TINY, '--outdir', str(out), '--results', str(results), '--batch-sizes',
                ','.join(map(str, BATCHES)), '--train-batch', '2', '--repeats', '1',
                '--budget', '600'])
  return out


def test_model_table_has_one_row_per_model_with_counts_from_stats(analysis):
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
  assert float(rows[0]['top1']) == 42.5 and float(rows[0]['top5']) == 70.0
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
  assert _png_size(path) == (analyze.FIGSIZE[0] * analyze.DPI, analyze.FIGSIZE[1] * analyze.DPI)
  with Image.open(path) as img:
    assert len(np.unique(np.asarray(img.convert('L')))) > 10  # something is drawn


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
  bad.write_text('{"model": "alexnet", "top1": 50}\n\n{"top1": 3}\n')
  with pytest.raises(ValueError, match=r'results.jsonl:3: expected a JSON object with "model"'):
    analyze.load_results([str(bad)])


def test_unknown_model_is_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    analyze.main(['alexnet2013'])
  assert 'unknown model(s) alexnet2013; known:' in capsys.readouterr().err

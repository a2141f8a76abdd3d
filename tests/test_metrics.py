"""metrics.py: metrics.jsonl is cut back to a resumed run's step, torn lines included."""
from linformer_jax import metrics


def test_metrics_truncate(tmp_path):
  workdir = str(tmp_path)
  writer = metrics.MetricWriter(workdir)
  for step in range(6):
    writer.write(step, {'train_loss': float(step)})
  writer.close()
  with open(tmp_path / metrics.METRICS_FILE, 'a') as f:
    f.write('{"step": 6, "train_lo')  # Torn by a kill.
  writer = metrics.MetricWriter(workdir)
  writer.truncate(3)
  assert metrics.read_metrics(workdir) == [{'step': s, 'train_loss': s} for s in range(4)]
  writer.truncate(-1)
  assert metrics.read_metrics(workdir) == []
  writer.close()
  metrics.MetricWriter(workdir, enabled=False).write(1, {'train_loss': 1.0})
  assert metrics.read_metrics(workdir) == []

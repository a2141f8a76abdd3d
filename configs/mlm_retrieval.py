r"""Long-range retrieval in text: masked-LM where each row holds a passage twice.

Each row is CLS, 511 bytes of text, the same 511 bytes again (then one PAD).
Only the second copy is masked (15% of its bytes, BERT-style) and scored; the
first is left intact, so every scored byte can be copied from its twin 511
positions back (linformer_jax/data/text.py). Local mixing cannot reach that
far: a model without attention is left with what the surrounding bytes say.

Run: python train.py --config=configs/mlm_retrieval.py --workdir=./runs/mlm_retrieval

The default is exact softmax attention with rotary positions, which learns to
copy. Measured with that command on an otherwise idle 2-core CPU VM (AMD
EPYC, 2026-11-29): 3 min 36 s wall including compilation (4.0 min user + 2.6
min sys CPU, peak RSS 2.4 GiB); eval loss in nats per scored byte 0.420 at
step 100 (91.7% right), 0.023 at 200, 0.0133 at step 300 (99.96% right).
Run for 400 steps instead (one seed each, 2-core AMD EPYC, 2026-11-29), eval
loss in nats per scored byte at steps 100 / 200 / 300 / 400:
  softmax + rotary (the default)      1.232 / 0.026 / 0.0096 / 0.0076 (100% right)
  attention-free control              2.040 / 1.644 / 1.502 / 1.425 (60.8% right)
  the paper's attention, learned pos. 2.046 / 1.659 / 1.517 / 1.445 (60.3% right)
(the control: --config.model.attention=none --config.model.position=learned;
the paper's: --config.model.attention=linear --config.model.position=learned).
Baselines logged at step 0: unigram 3.344, bigram 2.652 nats per byte. The
control and the paper's attention learn what the neighbouring bytes say, as
plain masked-LM does; only softmax copies.

Why the paper's attention cannot do this: its output for a query is a convex
combination of the rows of one [head_dim, head_dim] summary of all keys and
values per head (softmax over the features of q, over the positions of K), so
a layer holds 4 x 32 = 128 such rows, not 511 positions to copy from; and
rotary positions do not survive its feature softmax (ModelConfig refuses
them). Softmax with learned absolute positions did not learn to copy within
600 steps at seq_len 256 either (1.441 against the control's 1.490): rotary
makes "511 positions back" the same query for every position.

Longer range: --config.seq_len=4096 --config.batch_size=2 (2047-byte passages,
2047 positions apart; batch 2 keeps the scored bytes per step and softmax's
[2, 4, 4096, 4096] scores in memory), 300 steps, eval loss at steps 100 / 200 /
300: softmax + rotary 2.061 / 0.863 / 0.344 (92.6% right, still falling; 12
min, 0.4-0.5 steps/s); control 2.096 / 1.756 / 1.622 (57.2%); the paper's
attention 2.140 / 1.775 / 1.629 (56.9%).

Hybrids, 4 layers (--config.model.num_layers=4), 300 steps, one seed each, 2-core
Intel Xeon, 2026-12-06, two runs sharing the machine; eval loss at steps
100 / 200 / 300:
  softmax + rotary, 4 layers               1.198 / 0.050 / 0.0231 (99.9%)
  hybrid 3:1, softmax layer with rotary    1.490 / 0.123 / 0.0646 (99.0%)
    (--config.model.layer_attention=linear,linear,linear,softmax)
  linear+window (w = 64), learned pos.     2.037 / 1.623 / 1.493 (59.3%)
    (--config.model.attention=linear+window --config.model.position=learned)
  hybrid, softmax first (with rotary)      1.965 / 0.404 / 0.114 (97.9%)
    (--config.model.layer_attention=softmax,linear,linear,linear, the pattern of
    configs/mlm_hybrid.py; AMD EPYC, alone: 5 min 11 s)
One softmax layer in four is enough to copy; a 64-token window is not. Here, unlike
on causal MQAR, softmax last copies sooner than softmax first.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')
  config.seq_len = 1024               # CLS + 2 x 511-byte passage + PAD
  config.repeat_passage = True        # mask and score only the second copy of each passage
  config.num_train_steps = 300
  config.warmup_steps = 30
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 300
  config.model.attention = 'softmax'  # exact attention: see above for the paper's
  config.model.position = 'rotary'    # relative positions: copying is one offset for all
  return config

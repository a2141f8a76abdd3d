r"""configs/mlm.py with each passage twice, scored on the second copy: long-range retrieval in text.

Each row is CLS, 511 bytes of text, the same 511 bytes again (then one PAD);
masking is as usual, but only masked bytes of the second copy are scored, and
each is 511 positions after its twin (linformer_jax/data/text.py). Attention
can copy it; a model that mixes only locally cannot, and is left with what the
surrounding bytes tell it. 15% of scored bytes were also selected in the first
copy (13.5% hidden there by MASK or a random byte).

Run: python train.py --config=configs/mlm_retrieval.py --workdir=./runs/mlm_retrieval
Longer range: --config.seq_len=4096 (2047-byte passages, 2047 positions apart).
Not measured yet.
"""

from linformer_jax import config_lib


def get_config():
  config = config_lib.sibling(__file__, 'mlm.py')
  config.seq_len = 1024               # CLS + 2 x 511-byte passage + PAD
  config.repeat_passage = True        # score only the second copy of each passage
  return config

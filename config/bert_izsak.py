# Izsak, Berchansky & Levy 2021, "How to Train BERT with an Academic Budget" (24hBERT, EMNLP 2021):
# Cramming's other baseline (Tables 3 and 4), a large BERT squeezed into a day:
#   python train.py config/bert_izsak.py --budget_hours=24
# Values from their repository's recommended command (IntelLabs/academic-budget-bert, README.md and
# pretraining/args/*.py, pretraining/modeling.py): 24 x 1024, 16 heads, 4096 GELU FFN, pre-LN with a
# final LayerNorm, eps 1e-12, dropout 0.1, learned positions, biases, sparse prediction, the MLM
# head transform, AdamW lr 1e-3 betas 0.9/0.98 eps 1e-6 weight decay 0.01, 6% warmup then linear
# decay to 0 at the time budget, batch 4096, no clipping, 15% masking 80/10/10.
# Where this differs: their decoder bias is off under sparse prediction (Cramming's reproduction,
# config/train/bert-izsak.yaml, turns it on and uses lr 2e-3, eps 1e-6 norms); they mask statically
# (10 copies, at most 20 of 128 tokens) where cram masks exactly 19 afresh each step; they keep
# token-type embeddings and no embedding LayerNorm, cram has no token types and always normalizes
# the embedding; fp16 with DeepSpeed there, bf16 autocast here where the GPU has it.
out_dir = "out-bert-izsak"
n_layer = 24
n_head = 16
n_embd = 1024
n_inner = 4096
bias = True
positions = "learned"
ffn = "gelu"
head_transform = True
decoder_bias = False
dropout = 0.1
mask_fraction = 0.15
eval_mask_fraction = 0.25  # validation keeps cram's masks, so the loss compares with crammed runs
schedule = "linear"
warmup_fraction = 0.06
learning_rate = 1e-3
batch_size = 4096
batch_ramp = 0.0
micro_batch_size = 64
betas = (0.9, 0.98)
eps = 1e-6
weight_decay = 0.01
grad_clip = 0.0

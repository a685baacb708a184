# The original BERT recipe stopped at the budget: Cramming's "BERT, original recipe" row (Geiping &
# Goldstein 2022, arXiv 2212.14034, Table 3), at cram's default 16 x 768 shape so that it compares
# with the crammed model of the same size (BERT-base is --n_layer=12):
#   python train.py config/bert_original.py --budget_hours=24
# Values: Devlin et al. 2019 (arXiv 1810.04805, sec. 3.1 and appendix A.2: Adam lr 1e-4, betas
# 0.9/0.999, weight decay 0.01, warmup 10,000 of 1,000,000 steps then linear decay, batch 256,
# dropout 0.1, GELU, 15% masking 80/10/10) and google-research/bert (optimization.py: eps 1e-6,
# clipping at global norm 1.0; modeling.py: post-LN, biases, learned positions, the MLM head's
# dense + GELU + LayerNorm transform and its output bias, logits at every position). Cramming's
# reproduction (config/arch/v1/bert-original.yaml, config/train/bert-original.yaml) agrees.
# Not here: token-type embeddings and next-sentence prediction (cram has neither); BERT's 10% of
# steps at length 512 (cram's blocks are 128); BERT's Adam skips bias correction (AdamW here).
out_dir = "out-bert-original"
norm_scheme = "post"  # LayerNorm after each residual sum, no final norm
bias = True
positions = "learned"
ffn = "gelu"  # n_embd -> n_inner (3072) -> n_embd
head_transform = True
decoder_bias = True
sparse_prediction = False  # the decoder sees every position; the loss only the masked ones
dropout = 0.1  # on embeddings, attention probabilities and every sublayer's output
mask_fraction = 0.15
eval_mask_fraction = 0.25  # validation keeps cram's masks, so the loss compares with crammed runs
schedule = "linear"  # warmup, then linear decay to 0, here over the budget instead of 1M steps
warmup_fraction = 0.01  # 10,000 of 1,000,000 steps
learning_rate = 1e-4
batch_size = 256  # sequences per step, no ramp
batch_ramp = 0.0
micro_batch_size = 64  # logits at all 128 positions: 64 x 128 x 50k in the softmax
betas = (0.9, 0.999)
eps = 1e-6
weight_decay = 0.01
grad_clip = 1.0

# The laptop-CPU scale that config/cram_cpu.py and the baselines' _cpu presets share, so that their
# comparison is at one shape, corpus and budget: the paper's ~1e18 FLOPs (a GPU day) scaled to ~1e15
# (45 minutes of a 2-core CPU with bf16 units: 36.6M FLOPs a token x ~24M tokens), on the Wikipedia
# sample in ../shared (prepare.py --dataset=../shared/wikipedia).
data_dir = "data/wikipedia"  # 21.7M tokens of English Wikipedia: the paper's kind of corpus
budget_hours = 0.75  # 45 minutes on 2 cores that bench ~8,100 tokens/s (~24M tokens); scale this by
# 8,100 / your bench.py figure (or give --max_steps): the loss leaves its unigram plateau only after a
# number of tokens (~3.5M for config/cram_cpu.py, ~12-14M with a learned position scale)
n_layer = 4  # 4 x 256: at ~1e15 FLOPs a small model learns more per FLOP than a wide one
n_head = 4
n_embd = 256
n_inner = 1024
micro_batch_size = 16  # bf16 on a CPU that reports bf16 units (avx512_bf16, AMX), else fp32
eval_blocks = 256
log_interval = 10
checkpoint_minutes = 10.0
compile = False  # torch.compile gains little on CPU and its compile time would eat the budget

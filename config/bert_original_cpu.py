# The original BERT recipe (config/bert_original.py, where each value is sourced) at the shape and
# budget of config/cram_cpu.py, so that the paper's central comparison runs on a laptop CPU:
#   python train.py config/bert_original_cpu.py      # against: python train.py config/cram_cpu.py
# Its training values stay the original's (batch 256, peak 1e-4, 1% warmup): they are the recipe
# being compared; results/README.md has what each change is worth here.
import os

# the full-size recipe, then what the CPU changes
with open(os.path.join(os.path.dirname(__file__), "bert_original.py")) as f:
    exec(compile(f.read(), f.name, "exec"))
data_dir = "data/wikipedia"
out_dir = "out-cpu-bert-original"
budget_hours = 0.75
n_layer = 4
n_head = 4
n_embd = 256
n_inner = 1024  # BERT's 4 x n_embd
micro_batch_size = 16  # 16 micro batches a step; full prediction's logits at every position
eval_blocks = 256
log_interval = 10
checkpoint_minutes = 10.0
compile = False

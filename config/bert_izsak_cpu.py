# Izsak et al.'s recipe (config/bert_izsak.py, where each value is sourced) at the shape and budget
# of config/cram_cpu.py:
#   python train.py config/bert_izsak_cpu.py
# Like the crammed recipe it is a large-batch, high-learning-rate recipe, so it is scaled as
# config/cram_cpu.py scales the crammed one: batch / 256 (4096 -> 16), peak learning rate x 2.
import os

# the full-size recipe, then what the CPU changes
with open(os.path.join(os.path.dirname(__file__), "bert_izsak.py")) as f:
    exec(compile(f.read(), f.name, "exec"))
data_dir = "data/wikipedia"
out_dir = "out-cpu-bert-izsak"
budget_hours = 0.75
n_layer = 4
n_head = 4
n_embd = 256
n_inner = 1024
batch_size = 16
micro_batch_size = 16
learning_rate = 2e-3
eval_blocks = 256
log_interval = 10
checkpoint_minutes = 10.0
compile = False

# Izsak et al.'s recipe (config/bert_izsak.py, where each value is sourced) at the shape and budget
# of config/cram_cpu.py (config/cpu_scale.py):
#   python train.py config/bert_izsak_cpu.py
# Like the crammed recipe it is a large-batch, high-learning-rate recipe, so it is scaled as
# config/cram_cpu.py scales the crammed one: batch / 256 (4096 -> 16), peak learning rate x 2.
import os

# the full-size recipe, then the CPU's shape, corpus and budget
for _preset in ("bert_izsak.py", "cpu_scale.py"):
    with open(os.path.join(os.path.dirname(__file__), _preset)) as f:
        exec(compile(f.read(), f.name, "exec"))
out_dir = "out-cpu-bert-izsak"
batch_size = 16
learning_rate = 2e-3

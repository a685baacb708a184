# The original BERT recipe (config/bert_original.py, where each value is sourced) at the shape and
# budget of config/cram_cpu.py (config/cpu_scale.py), so that the comparison runs on a CPU:
#   python train.py config/bert_original_cpu.py      # against: python train.py config/cram_cpu.py
# Its training values stay the original's (batch 256, peak 1e-4, 1% warmup): they are the recipe
# being compared; results/README.md has what each change is worth here.
import os

# the full-size recipe, then the CPU's shape, corpus and budget
for _preset in ("bert_original.py", "cpu_scale.py"):
    with open(os.path.join(os.path.dirname(__file__), _preset)) as f:
        exec(compile(f.read(), f.name, "exec"))
out_dir = "out-cpu-bert-original"

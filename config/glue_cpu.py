# Fine-tuning the CPU-crammed 4 x 256 model (config/cram_cpu.py) on the GLUE files in ../shared:
#   python finetune_glue.py config/glue_cpu.py --ckpt=out-cpu/ckpt.pt --out_dir=out-cpu
#   python finetune_glue.py config/glue_cpu.py --ckpt=none --out_dir=out-cpu-random   # the baseline
# The paper's recipe (AdamW, batch 16, 5 epochs, warmup + cosine, dropout 0.1, last epoch, median of
# seeds) with what must change for a small model on 2 cores:
task = "cola,sst2,mrpc,rte"  # the four tasks in ../shared/glue
glue_dir = "../shared/glue"
learning_rate = 2e-4  # the paper's 4e-5 is for a 768-wide model; small BERTs fine-tune at 1e-4 to 5e-4
seeds = 3
max_train_examples = 10000  # SST-2's 67k sentences would take ~40 minutes a seed; the others are whole
num_threads = 1  # two fine-tuning runs side by side on 2 cores beat one run on both
# the baseline's architecture (--ckpt=none), as config/cram_cpu.py; a checkpoint brings its own
n_layer = 4
n_head = 4
n_embd = 256
n_inner = 1024
positions = "fixed_sinusoid"

"""Building blocks of the distillation recipes (`recipes/deepseek_to_llama3.py`) and the `hf-distill` CLI.

- `stdlib_corpus`: an offline Python code corpus from the interpreter's standard library, split by file;
- `layer_subset`: a smaller student made from a teacher by keeping some of its layers (DistilBERT-style);
- `model_sources`: model loading with errors that name the model and how to use a local copy;
- `joint_eval`: held-out perplexity and teacher agreement for several students in one pass over the teacher;
- `arguments` / `parsing` / `runner`: the recipe's settings, their YAML + command-line parsing, and the run
  (student, trainer, CE-only baseline, evaluation, report, model card) shared by the GPU configs and the CPU one.
"""

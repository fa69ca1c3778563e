"""Progressive distillation chains: each stage's saved student teaches the next, smaller one.

- `spec`: the chain file (teacher, shared settings, stages) and its checks;
- `stopping`: when a stage ends early (held-out loss plateau, KL to its teacher below a threshold);
- `state`: `chain_state.json`, the finished stages, written atomically so a killed chain resumes in its stage;
- `runner`: the stages in order, each a recipe run whose teacher is the previous stage's result;
- `report`: every stage against its own teacher and against the first teacher;
- `cli`: `hf-distill progressive --config chain.yaml`.
"""

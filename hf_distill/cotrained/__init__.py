"""Modules trained alongside the student: auxiliary multi-token-prediction heads, and the optimizer, schedule and
checkpoint state of each co-trained model (a mutual-learning peer, an online teacher)."""

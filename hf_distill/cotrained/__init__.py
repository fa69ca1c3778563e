"""Modules trained alongside the student: auxiliary multi-token-prediction heads (co-trained peers to come)."""

"""Accuracy evaluations (MMLU, HumanEval) and the sandbox that runs generated code."""

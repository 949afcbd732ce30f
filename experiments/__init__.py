"""The experiment runner: launchers (train/evaluate/predict) and the loop.

Only `train.py`, `evaluate.py` and `predict.py` define absl flags; everything
else here is importable library code for the runner.
"""

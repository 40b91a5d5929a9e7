"""The embedded demo: a synthetic multi-step task and the small model pair trained on it.

- :mod:`.task`: chains of arithmetic modulo 13, one operation per reasoning step, exact to grade.
- :mod:`.train`: the training recipe and script that produce the pair (``rankguide train-demo``).
"""

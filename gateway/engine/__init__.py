"""The call engine.

The door every call passes, its steps, consent at call time, what the answer names.
"""

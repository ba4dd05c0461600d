"""The DECIDE stage: the pure decision core (:mod:`vigil.decide.core`) and the stores of
what it reads and writes -- pair states and decisions, the breaker, silences, the pause --
with the shells that load its inputs and record its outcomes."""

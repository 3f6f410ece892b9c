# The reference-table generator needs PyTorch, which is not a test dependency:
# keep `pytest --doctest-modules` from importing it.
collect_ignore = ["data/make_torch_reference.py"]

"""Seeded fuzzing of every file fastrnn reads: .frnn, Keras .keras / .h5, ONNX, torch .pt
(state_dicts in-process; TorchScript only under isolation, see fastrnn/isolate.py).

  seeds.py     the valid files the mutators start from (committed fixtures and small models)
  mutate.py    deterministic mutators: mutate(fmt, seed_files, seed) -> (bytes, description)
  trial.py     one input through convert/load and, if it converts, predict and save: the outcome
  run.py       the long run: `python -m tests.fuzz.run --format onnx --n 100000` in a supervised
               child process (a crash or hang is recorded, checked again under isolation, and
               the run goes on)
  test_fuzz.py the short budget of the normal test run (FASTRNN_FUZZ_N inputs per format)

The contract checked: an input either converts to a model that runs, or raises a FastRNNError;
never another exception, never a crash or a hang of the caller's process -- except inside the
third-party parsers docs/security.md names as not memory-safe (libhdf5, TorchScript), where
convert(..., isolate=True) must turn the crash or hang into a ModelFormatError.
"""

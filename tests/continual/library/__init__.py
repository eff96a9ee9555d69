"""The continual-inference library's own tests, kept: adapted from its tests/continual/*.py (Lukas Hedegaard,
Apache-2.0, v1.2.4), one file per library file, run against this core through ``shim.py`` (renames and layout
transposes only). Where this core differs on purpose, the assertion checks this core's behaviour and a comment
names the difference (see paper/migrating-from-continual-inference.md).

Library test files left out, with the reason:
* test_about.py, test_logging.py: the library's package metadata and its log-once logger;
* test_utils.py: ``temporary_parameter``, an internal utility of the library;
* test_onnx.py: export of the library's flattened state tuple through TorchScript to ONNX; this core's export
  is ``co.export`` (tests/continual/test_export.py);
* test_ptflops.py (and the ptflops parts of test_transformer.py, test_*_mha.py): counts under the library's
  own ptflops hooks and conventions; this core's counting hooks are tested in tests/profiling/;
* multihead_attention/mha.py: the library's copy of torch's attention functions, used only by the private-state
  step test left out in test_retroactive_mha.py.
"""

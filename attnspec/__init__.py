"""attnspec: a formally checked reference specification of LLM attention kernels.

Subpackages: ``attnspec.spec`` (the executable specification), ``attnspec.proofs`` (Z3
theorems), ``attnspec.reference`` (oracles, strategies, conformance tools) and
``attnspec.hw_model`` (hardware and performance models).
"""

__version__ = "0.1.0"

#: The version of the specification that results and vectors cite ("attnspec-spec/<version>").
SPEC_VERSION = "0.1.0"

"""attnspec: a formally checked reference specification of LLM attention kernels.

Subpackages: ``attnspec.spec`` (the executable specification), ``attnspec.proofs`` (Z3
theorems), ``attnspec.reference`` (oracles, strategies, conformance tools) and
``attnspec.hw_model`` (hardware and performance models).

Installed (``pip install`` or ``pip install -e``), the subpackages come from the setuptools
``package-dir`` mapping. Imported straight from a source checkout without installing (the
repository root on ``sys.path``), the subpackages are the sibling folders ``spec/``,
``proofs/``, ``reference/`` and ``hw_model/``: the checkout's root is added to this package's
search path, so ``attnspec.spec`` resolves there instead of failing with a confusing
``No module named 'attnspec.spec'``.
"""

import os as _os

__version__ = "0.1.0"

#: The version of the specification that results and vectors cite ("attnspec-spec/<version>").
SPEC_VERSION = "0.1.0"

_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and _os.path.isdir(_os.path.join(_checkout, "spec")):
    __path__.append(_checkout)  # a source checkout: spec/, proofs/, ... are attnspec's subpackages

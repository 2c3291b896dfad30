"""Only the C helper is declared here; everything else is in pyproject.toml.

mailprime.message._relaxed (DKIM relaxed body canonicalization) is optional: without a C
compiler the install still succeeds and mailprime.message.dkim_canon uses its Python version,
which gives the same octets, slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mailprime.message._relaxed",
                             ["src/mailprime/message/_relaxed.c"], optional=True)])

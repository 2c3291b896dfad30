"""Only the C helpers are declared here; everything else is in pyproject.toml.

mailprime.message._relaxed (DKIM relaxed canonicalization and the hashing around it) is
optional: without a C compiler the install still succeeds and mailprime.message.dkim_canon and
dkim use their Python versions, which give the same octets, slower. With OpenSSL's headers
(Debian's libssl-dev) it hashes with libcrypto directly; without them, through hashlib."""

import os
import sysconfig

from setuptools import Extension, setup


def _openssl_headers() -> bool:
    include = sysconfig.get_config_var("INCLUDEDIR") or "/usr/include"
    return any(os.path.exists(os.path.join(base, "openssl", "sha.h"))
               for base in (include, "/usr/include", "/usr/local/include"))


_with_openssl = _openssl_headers()
setup(ext_modules=[
    Extension(
        "mailprime.message._relaxed", ["src/mailprime/message/_relaxed.c"], optional=True,
        define_macros=[("MAILPRIME_OPENSSL", "1")] if _with_openssl else [],
        libraries=["crypto"] if _with_openssl else [],
    ),
    # Quoted-printable for campaign text parts (marketing.message_builder); binascii otherwise.
    Extension("mailprime.message._qp", ["src/mailprime/message/_qp.c"], optional=True),
])

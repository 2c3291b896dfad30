"""Only the C helpers are declared here; everything else is in pyproject.toml.

Both are optional: without a C compiler the install still succeeds and the Python versions run,
which give the same octets, slower. mailprime.message._relaxed (DKIM canonicalization and the
hashing around a signature) is first built against libcrypto (OpenSSL's SHA256(); Debian's
libssl-dev provides the headers); if that fails to compile or link — no headers, a libcrypto
built without the low-level SHA functions, headers and library from different places — it is
built again hashing through hashlib, rather than dropped."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_OPENSSL_MACRO = ("MAILPRIME_OPENSSL", "1")


class _BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:  # CompileError, LinkError: setuptools' optional handling comes after
            if _OPENSSL_MACRO not in ext.define_macros:
                raise
            print(f"{ext.name}: building against libcrypto failed; hashing through hashlib instead")
            ext.define_macros.remove(_OPENSSL_MACRO)
            ext.libraries.remove("crypto")
            self.force = True  # compile again: the object file was made with the macro
            super().build_extension(ext)


setup(
    cmdclass={"build_ext": _BuildExt},
    ext_modules=[
        Extension("mailprime.message._relaxed", ["src/mailprime/message/_relaxed.c"],
                  optional=True, define_macros=[_OPENSSL_MACRO], libraries=["crypto"]),
        # Quoted-printable for campaign text parts (marketing.message_builder); binascii otherwise.
        Extension("mailprime.message._qp", ["src/mailprime/message/_qp.c"], optional=True),
        # The line facts of each accepted message (storage.sql.streams.line_columns); Python
        # byte searches otherwise.
        Extension("mailprime.storage.sql._lines", ["src/mailprime/storage/sql/_lines.c"],
                  optional=True),
    ],
)

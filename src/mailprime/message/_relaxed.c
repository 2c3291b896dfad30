/* DKIM "relaxed" body canonicalization of complete lines (RFC 6376 3.4.4 a), in C.
 *
 * mailprime.message.dkim_canon.relax_lines does this in a few Python-level passes (replace,
 * a regex, replace): ~46 us of the ~90 us of Python around each signature of a 10 KB body, the
 * largest single step (docs/benchmarks.md, "DKIM signing"). Here it is one pass over the
 * octets. The rules, exactly those of the Python version (tests/message/ hold the two to the
 * same output on random input):
 *   - WSP is SP and HTAB only; CR, LF, VT, FF, NUL and every other octet are content;
 *   - a run of WSP becomes one SP;
 *   - a run of WSP directly before CR LF goes (a bare CR or LF does not end a line).
 * The input is complete lines (each ending in CR LF); empty lines are kept (the caller drops
 * those at the end). Input needing no change is returned as it is (no copy): base64 parts and
 * most text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static inline int is_wsp(char c) { return c == ' ' || c == '\t'; }

/* Where the first change is needed, or n if none. */
static Py_ssize_t first_change(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\t')
            return i;
        if (c == ' ') {
            if (i + 1 < n) {
                char d = s[i + 1];
                if (is_wsp(d))
                    return i;
                if (d == '\r' && i + 2 < n && s[i + 2] == '\n')
                    return i;
            }
        }
    }
    return n;
}

static PyObject *relax_lines(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "relax_lines() takes bytes, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    Py_ssize_t i = first_change(s, n);
    if (i == n) {
        Py_INCREF(arg);
        return arg;
    }
    /* The output is never longer than the input. */
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(result);
    memcpy(out, s, (size_t)i);
    char *w = out + i;
    while (i < n) {
        if (is_wsp(s[i])) {
            Py_ssize_t j = i + 1;
            while (j < n && is_wsp(s[j]))
                j++;
            if (!(j + 1 < n && s[j] == '\r' && s[j + 1] == '\n'))
                *w++ = ' ';
            i = j;
        } else {
            Py_ssize_t j = i + 1;
            while (j < n && !is_wsp(s[j]))
                j++;
            memcpy(w, s + i, (size_t)(j - i));
            w += j - i;
            i = j;
        }
    }
    if (_PyBytes_Resize(&result, w - out) < 0)
        return NULL;
    return result;
}

static PyMethodDef methods[] = {
    {"relax_lines", relax_lines, METH_O,
     "relax_lines(block: bytes, /) -> bytes\n\nRelaxed canonical form of complete lines "
     "(RFC 6376 3.4.4 a): WSP runs become one SP, WSP before CRLF goes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_relaxed",
    "DKIM relaxed body canonicalization of complete lines, in C (see dkim_canon).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__relaxed(void) { return PyModule_Create(&module_def); }

/* The line facts of a message's octets that its blob row keeps (storage.sql.streams.line_columns),
 * in C.
 *
 * Every accepted message is scanned once where it is written, on the group-commit writer thread,
 * holding the GIL. In Python that took two bytes.count() and a find() loop, all searches for a
 * two-octet pattern: ~26 us of a 13 KB campaign message, a third of what the writer spent on it.
 * Here one pass jumps from LF to LF with memchr (the C library's vectorised search) and looks only
 * at the octet before each LF and the one after it.
 *
 * Theory of operation: for each LF at offset i,
 *   - the octet before it must be CR (i > 0 and s[i-1] == CR), else the content has a bare LF:
 *     the answer is (True, None) at once (what `line_columns` then keeps needs nothing else);
 *   - an octet "." after it starts a dot line at i + 1.
 * A "." at offset 0 starts a dot line too. That is the same test as the Python one: as many LFs
 * as CRLFs means every LF has its CR, and "\n." occurrences never overlap.
 * The offsets of the dot lines are returned packed as little-endian unsigned 32-bit integers,
 * at most `limit` of them: with more (or with content too long for 32-bit offsets) the answer
 * is None and the reader finds them itself. No dot line at all: b"".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define RELEASE_GIL_FROM (1 << 20)

static void put_le32(unsigned char *out, Py_ssize_t value)
{
    unsigned long v = (unsigned long)value;
    out[0] = (unsigned char)(v & 0xFF);
    out[1] = (unsigned char)((v >> 8) & 0xFF);
    out[2] = (unsigned char)((v >> 16) & 0xFF);
    out[3] = (unsigned char)((v >> 24) & 0xFF);
}

static PyObject *scan(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*n:scan", &view, &limit))
        return NULL;
    if (limit < 0 || limit > 4096) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan(): limit must be 0 to 4096");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)view.buf;
    const Py_ssize_t n = view.len;
    /* Room for limit + 1 offsets: one more than may be kept says "too many". */
    Py_ssize_t offsets_small[65];
    Py_ssize_t *offsets = offsets_small;
    if (limit + 1 > (Py_ssize_t)(sizeof offsets_small / sizeof offsets_small[0])) {
        offsets = PyMem_New(Py_ssize_t, limit + 1);
        if (offsets == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
    }
    Py_ssize_t count = 0;
    int bare_lf = 0;

    /* Only a long scan lets other threads run meanwhile: giving the GIL up costs a wait of up
     * to the switch interval to get it back when another thread is busy, far more than a
     * message of the usual size takes. */
    PyThreadState *released = n >= RELEASE_GIL_FROM ? PyEval_SaveThread() : NULL;
    if (n > 0 && s[0] == '.')
        offsets[count++] = 0;
    const unsigned char *p = s;
    const unsigned char *end = s + n;
    while (p < end) {
        const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            break;
        if (lf == s || lf[-1] != '\r') {
            bare_lf = 1;
            break;
        }
        if (lf + 1 < end && lf[1] == '.' && count <= limit)
            offsets[count++] = (lf + 1) - s;
        p = lf + 1;
    }
    if (released != NULL)
        PyEval_RestoreThread(released);

    PyBuffer_Release(&view);
    PyObject *dots;
    if (bare_lf) {
        dots = Py_NewRef(Py_None);
    } else if (count > limit || (count > 0 && n > (Py_ssize_t)0xFFFFFFFF)) {
        dots = Py_NewRef(Py_None);
    } else {
        dots = PyBytes_FromStringAndSize(NULL, 4 * count);
        if (dots != NULL) {
            unsigned char *out = (unsigned char *)PyBytes_AS_STRING(dots);
            for (Py_ssize_t i = 0; i < count; i++)
                put_le32(out + 4 * i, offsets[i]);
        }
    }
    if (offsets != offsets_small)
        PyMem_Free(offsets);
    if (dots == NULL)
        return NULL;
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(dots);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyBool_FromLong(bare_lf));
    PyTuple_SET_ITEM(result, 1, dots);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data: bytes, limit: int, /) -> tuple[bool, bytes | None]\n\n(bare LF, dot lines): "
     "whether some LF has no CR before it and, if none has, the offsets of the lines starting "
     "with \".\" packed little-endian 32-bit (b\"\": none; None: more than `limit`)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_lines", "A message's line facts for its blob row, in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__lines(void) { return PyModule_Create(&module_def); }

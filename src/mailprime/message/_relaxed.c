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
#include <stdint.h>
#include <string.h>

static inline int is_wsp(char c) { return c == ' ' || c == '\t'; }

/* Non-zero when some octet of v is zero (the classic "haszero" bit trick: exact, no false
 * positives once the high-bit test masks out borrows from octets that were not zero). */
static inline uint64_t has_zero_octet(uint64_t v)
{
    return (v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL;
}

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
        /* Eight octets at a time while none is SP or HTAB (the SWAR zero-octet test on the
         * word XORed with each): runs of text, tags and URLs go by in one test and one copy. */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (has_zero_octet(v ^ 0x2020202020202020ULL) ||
                has_zero_octet(v ^ 0x0909090909090909ULL))
                break;
            memcpy(w, &v, 8);
            w += 8;
            i += 8;
        }
        if (i >= n)
            break;
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

/* ---- the signed header data (RFC 6376 3.4.2, 5.4.2) ----------------------------------------
 *
 * signed_header(section, names) does in one call what message.dkim's Python path does with
 * dkim_canon.split_fields, _signable and _names_and_data (held to it byte for byte by tests):
 *   - the section is cut into lines at CRLF; a line starting with SP or HTAB continues the field
 *     above (or is skipped when there is none); any other line is a field if it has a colon and
 *     something before it, else it is skipped together with its continuation lines;
 *   - a field's key is its name without SP/HTAB at either end, in ASCII lower case; its value
 *     is everything after the first colon up to the end of its last continuation line;
 *   - for each of `names` (lower-case bytes, in h= order), its instances bottom up, each as
 *     key ":" relaxed-value CRLF, where the relaxed value is the value with every CRLF pair
 *     deleted (unfolding), each run of SP/HTAB made one SP and SP/HTAB removed at both ends.
 * It returns (counts, data, from_value): how many instances of each name, the data, and the raw
 * value of the first field whose key is "from" (None without one).
 */

#define MAX_KEY 64

typedef struct {
    Py_ssize_t value_start, value_end; /* the raw value: section[start:end] */
    int name_index;                     /* in `names`, or -1 */
} field_t;

static Py_ssize_t find_crlf(const char *s, Py_ssize_t from, Py_ssize_t n)
{
    while (from + 1 < n) {
        const char *cr = memchr(s + from, '\r', (size_t)(n - from - 1));
        if (cr == NULL)
            return n;
        Py_ssize_t i = cr - s;
        if (s[i + 1] == '\n')
            return i;
        from = i + 1;
    }
    return n;
}

/* The relaxed value of s[start:end], written at out; returns its length. */
static Py_ssize_t relax_value(const char *s, Py_ssize_t start, Py_ssize_t end, char *out)
{
    char *w = out;
    int pending_space = 0, seen_content = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        char c = s[i];
        if (c == '\r' && i + 1 < end && s[i + 1] == '\n') {
            i++; /* a fold: the CRLF pair is deleted */
            continue;
        }
        if (is_wsp(c)) {
            pending_space = 1;
            continue;
        }
        if (pending_space && seen_content)
            *w++ = ' ';
        pending_space = 0;
        seen_content = 1;
        *w++ = c;
    }
    return w - out;
}

static PyObject *signed_header(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *section_obj, *names;
    if (!PyArg_ParseTuple(args, "SO!:signed_header", &section_obj, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t name_count = PyTuple_GET_SIZE(names);
    for (Py_ssize_t k = 0; k < name_count; k++) {
        PyObject *name = PyTuple_GET_ITEM(names, k);
        if (!PyBytes_Check(name) || PyBytes_GET_SIZE(name) > MAX_KEY) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes of at most 64 octets");
            return NULL;
        }
    }
    const char *s = PyBytes_AS_STRING(section_obj);
    Py_ssize_t n = PyBytes_GET_SIZE(section_obj);

    Py_ssize_t capacity = 64, count = 0;
    field_t *fields = PyMem_Malloc(sizeof(field_t) * (size_t)capacity);
    if (fields == NULL)
        return PyErr_NoMemory();
    Py_ssize_t from_start = -1, from_end = -1;
    int open_field = 0; /* the last line started a field that continuation lines extend */
    Py_ssize_t pos = 0;
    for (;;) {
        Py_ssize_t line_end = find_crlf(s, pos, n);
        if (line_end > pos && is_wsp(s[pos])) {
            if (open_field)
                fields[count - 1].value_end = line_end;
        } else {
            open_field = 0;
            const char *colon = memchr(s + pos, ':', (size_t)(line_end - pos));
            if (colon != NULL && colon > s + pos) {
                Py_ssize_t a = pos, b = colon - s;
                while (a < b && is_wsp(s[a]))
                    a++;
                while (b > a && is_wsp(s[b - 1]))
                    b--;
                int index = -1;
                char key[MAX_KEY];
                Py_ssize_t key_len = b - a;
                if (key_len <= MAX_KEY) {
                    for (Py_ssize_t i = 0; i < key_len; i++) {
                        char c = s[a + i];
                        key[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
                    }
                    for (Py_ssize_t k = 0; k < name_count && index < 0; k++) {
                        PyObject *name = PyTuple_GET_ITEM(names, k);
                        if (PyBytes_GET_SIZE(name) == key_len &&
                            memcmp(PyBytes_AS_STRING(name), key, (size_t)key_len) == 0)
                            index = (int)k;
                    }
                    if (from_start < 0 && key_len == 4 && memcmp(key, "from", 4) == 0) {
                        from_start = (colon - s) + 1;
                        from_end = -2; /* set when the field is complete, below */
                    }
                }
                if (count == capacity) {
                    capacity *= 2;
                    field_t *grown = PyMem_Realloc(fields, sizeof(field_t) * (size_t)capacity);
                    if (grown == NULL) {
                        PyMem_Free(fields);
                        return PyErr_NoMemory();
                    }
                    fields = grown;
                }
                fields[count].value_start = (colon - s) + 1;
                fields[count].value_end = line_end;
                fields[count].name_index = index;
                count++;
                open_field = 1;
            }
        }
        if (line_end >= n)
            break;
        pos = line_end + 2;
    }
    /* The From value ends where its field ends (continuation lines included). */
    if (from_start >= 0) {
        for (Py_ssize_t f = 0; f < count; f++) {
            if (fields[f].value_start == from_start) {
                from_end = fields[f].value_end;
                break;
            }
        }
    }

    Py_ssize_t bound = 0;
    for (Py_ssize_t f = 0; f < count; f++) {
        if (fields[f].name_index >= 0) {
            PyObject *name = PyTuple_GET_ITEM(names, fields[f].name_index);
            bound += PyBytes_GET_SIZE(name) + 3 + (fields[f].value_end - fields[f].value_start);
        }
    }
    PyObject *counts = PyTuple_New(name_count);
    PyObject *data = PyBytes_FromStringAndSize(NULL, bound);
    if (counts == NULL || data == NULL) {
        Py_XDECREF(counts);
        Py_XDECREF(data);
        PyMem_Free(fields);
        return NULL;
    }
    char *w = PyBytes_AS_STRING(data);
    for (Py_ssize_t k = 0; k < name_count; k++) {
        PyObject *name = PyTuple_GET_ITEM(names, k);
        Py_ssize_t instances = 0;
        for (Py_ssize_t f = count - 1; f >= 0; f--) {
            if (fields[f].name_index != (int)k)
                continue;
            instances++;
            memcpy(w, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
            w += PyBytes_GET_SIZE(name);
            *w++ = ':';
            w += relax_value(s, fields[f].value_start, fields[f].value_end, w);
            *w++ = '\r';
            *w++ = '\n';
        }
        PyObject *number = PyLong_FromSsize_t(instances);
        if (number == NULL) {
            Py_DECREF(counts);
            Py_DECREF(data);
            PyMem_Free(fields);
            return NULL;
        }
        PyTuple_SET_ITEM(counts, k, number);
    }
    PyMem_Free(fields);
    if (_PyBytes_Resize(&data, w - PyBytes_AS_STRING(data)) < 0) {
        Py_DECREF(counts);
        return NULL;
    }
    PyObject *from_value;
    if (from_start >= 0 && from_end >= from_start) {
        from_value = PyBytes_FromStringAndSize(s + from_start, from_end - from_start);
    } else {
        from_value = Py_None;
        Py_INCREF(from_value);
    }
    if (from_value == NULL) {
        Py_DECREF(counts);
        Py_DECREF(data);
        return NULL;
    }
    return Py_BuildValue("(NNN)", counts, data, from_value);
}

static PyMethodDef methods[] = {
    {"relax_lines", relax_lines, METH_O,
     "relax_lines(block: bytes, /) -> bytes\n\nRelaxed canonical form of complete lines "
     "(RFC 6376 3.4.4 a): WSP runs become one SP, WSP before CRLF goes."},
    {"signed_header", signed_header, METH_VARARGS,
     "signed_header(section: bytes, names: tuple[bytes, ...], /) -> "
     "tuple[tuple[int, ...], bytes, bytes | None]\n\nThe instance count of each name, the "
     "relaxed header data they sign (each name's instances bottom up) and the raw value of the "
     "first From field (RFC 6376 3.4.2, 5.4.2)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_relaxed",
    "DKIM relaxed body canonicalization of complete lines, in C (see dkim_canon).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__relaxed(void) { return PyModule_Create(&module_def); }

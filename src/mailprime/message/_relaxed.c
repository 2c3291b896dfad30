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
 * those at the end). Input needing no change is returned as it is (the scratch copy made while
 * scanning, at memcpy speed, is dropped): base64 parts and most text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(MAILPRIME_OPENSSL)
/* The one-shot SHA256() and SHA256_Init/Update/Final: deprecated in OpenSSL 3.0 in favour of
 * EVP, but still built, and they skip EVP's per-call context and provider look-up (~0.25 us a
 * hash through hashlib, against ~4 us for the whole 10 KB body: it shows at 30,000 signatures a
 * second). Same assembly (SHA-NI where the CPU has it) either way. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#endif

static inline int is_wsp(char c) { return c == ' ' || c == '\t'; }

/* A run of WSP starting at s[i] (n octets in all): one SP, or nothing when CR LF follows it.
 * Returns where the run ends; sets *changed when the output differs from the input. */
static inline Py_ssize_t settle_run(const char *s, Py_ssize_t i, Py_ssize_t n, char **w,
                                    int *changed)
{
    Py_ssize_t j = i + 1;
    while (j < n && is_wsp(s[j]))
        j++;
    if (j + 1 < n && s[j] == '\r' && s[j + 1] == '\n') {
        *changed = 1;
    } else {
        *(*w)++ = ' ';
        if (j - i > 1 || s[i] == '\t')
            *changed = 1;
    }
    return j;
}

/* The relaxed form of s[0:n] written at out (room for n octets: it never grows); returns its
 * length and sets *changed when it differs from the input.
 *
 * Only a few places change: an HTAB, or an SP followed by SP, HTAB or CR (a run, or perhaps WSP
 * before CRLF). Where SSE2 is there (every x86-64) the scan finds them 16 octets at a time and
 * copies the octets between them as they are, so words and their single spaces go by in whole
 * blocks: each block is stored to the output at once, then the places found in it are settled
 * in order (the run's length read from the block's WSP bits when it ends inside the block), the
 * output continuing from the source after each. The rest is octet by octet. */
static Py_ssize_t relax_into(const char *s, Py_ssize_t n, char *out, int *changed)
{
    char *w = out;
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    const __m128i sp = _mm_set1_epi8(' '), tab = _mm_set1_epi8('\t'), cr = _mm_set1_epi8('\r');
    /* 17 octets readable: the block and the octet after it (the "next" view). */
    while (i + 17 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i next = _mm_loadu_si128((const __m128i *)(s + i + 1));
        __m128i is_sp = _mm_cmpeq_epi8(v, sp), is_tab = _mm_cmpeq_epi8(v, tab);
        __m128i next_special = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(next, sp), _mm_cmpeq_epi8(next, tab)),
            _mm_cmpeq_epi8(next, cr));
        unsigned places = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(is_tab, _mm_and_si128(is_sp, next_special)));
        /* w is never past s + i (the output never grows): 16 octets fit at w. */
        _mm_storeu_si128((__m128i *)w, v);
        if (places == 0) {
            w += 16;
            i += 16;
            continue;
        }
        unsigned wsp = (unsigned)_mm_movemask_epi8(_mm_or_si128(is_sp, is_tab));
        Py_ssize_t done = 0; /* octets of the block settled: the output is at s + i + done's */
        for (;;) {
            unsigned k = (unsigned)__builtin_ctz(places);
            w += (Py_ssize_t)k - done; /* the octets before the place, stored already */
            /* Where the run ends: the first clear WSP bit from k (16: perhaps past the block). */
            unsigned run_end = (unsigned)__builtin_ctz(~(wsp >> k)) + k;
            Py_ssize_t j;
            if (run_end < 16) {
                j = i + run_end;
                if (j + 1 < n && s[j] == '\r' && s[j + 1] == '\n') {
                    *changed = 1;
                } else {
                    *w++ = ' ';
                    if (run_end - k > 1 || s[i + k] == '\t')
                        *changed = 1;
                }
            } else {
                j = settle_run(s, i + k, n, &w, changed);
            }
            done = j - i;
            if (done >= 16)
                break; /* the run went past the block */
            places &= ~0u << done;
            if (j + 16 > n)
                break; /* near the end: the octet loop below goes on from j */
            /* The rest of the block again, from the source, at the output's new place. */
            _mm_storeu_si128((__m128i *)w, _mm_loadu_si128((const __m128i *)(s + j)));
            if (places == 0) {
                w += i + 16 - j;
                done = 16;
                break;
            }
        }
        i += done;
    }
#endif
    while (i < n) {
        if (is_wsp(s[i])) {
            i = settle_run(s, i, n, &w, changed);
        } else {
            *w++ = s[i++];
        }
    }
    return w - out;
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
    /* The output is never longer than the input. */
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(result);
    int changed = 0;
    Py_ssize_t length = relax_into(s, n, out, &changed);
    if (!changed) {
        /* Nothing changed (base64 parts, most text): keep the input, drop the copy. */
        Py_DECREF(result);
        Py_INCREF(arg);
        return arg;
    }
    if (_PyBytes_Resize(&result, length) < 0)
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

/* `names` a tuple of bytes keys of at most MAX_KEY octets; 0, or -1 with TypeError set. */
static int check_names(PyObject *names)
{
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names); k++) {
        PyObject *name = PyTuple_GET_ITEM(names, k);
        if (!PyBytes_Check(name) || PyBytes_GET_SIZE(name) > MAX_KEY) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes of at most 64 octets");
            return -1;
        }
    }
    return 0;
}

/* (counts, data, from_value) of the header section s[0:n]; `names` checked by check_names. */
static PyObject *signed_header_of(const char *s, Py_ssize_t n, PyObject *names)
{
    Py_ssize_t name_count = PyTuple_GET_SIZE(names);

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

static PyObject *signed_header(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *section_obj, *names;
    if (!PyArg_ParseTuple(args, "SO!:signed_header", &section_obj, &PyTuple_Type, &names))
        return NULL;
    if (check_names(names) < 0)
        return NULL;
    return signed_header_of(PyBytes_AS_STRING(section_obj), PyBytes_GET_SIZE(section_obj),
                            names);
}

/* ---- everything a signature needs of a message in memory, in one call ----------------------
 *
 * signing_input(message, names) is dkim_canon.split_message, signed_header and
 * dkim_canon.body_hash together: the header section and the body are read where they lie in
 * `message` (no copies of either), the body is canonicalized (relaxed, 3.4.4) into one buffer
 * and hashed with hashlib's SHA-256 (OpenSSL) through a memoryview of it. It returns
 * (counts, data, from_value, bh): signed_header's three and the body hash.
 * The body's rules (those of dkim_canon._relax_whole): a non-empty body without a final CRLF
 * gets one; the empty lines at its end are dropped; an empty result hashes as nothing.
 */

/* Bodies from this size on are canonicalized and hashed with the GIL released (as hashlib
 * does from 2 KB): a large message signed in memory then holds no other thread up. Below it
 * releasing would cost more than it gives (each release is a hand-over of the lock). */
#define RELEASE_GIL_FROM 65536

#if defined(MAILPRIME_OPENSSL)
static PyObject *digest_of(const char *data, Py_ssize_t length)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    if (length >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        SHA256((const unsigned char *)data, (size_t)length, md);
        Py_END_ALLOW_THREADS
    } else {
        SHA256((const unsigned char *)data, (size_t)length, md);
    }
    return PyBytes_FromStringAndSize((const char *)md, SHA256_DIGEST_LENGTH);
}
#else
static PyObject *sha256_constructor; /* hashlib's, found at import */

static PyObject *digest_of(const char *data, Py_ssize_t length)
{
    PyObject *view = PyMemoryView_FromMemory((char *)data, length, PyBUF_READ);
    if (view == NULL)
        return NULL;
    PyObject *hash = PyObject_CallOneArg(sha256_constructor, view);
    /* hashlib has read it all by now; release() says so (it fails while anything still holds
     * the buffer), before the caller frees the memory. */
    PyObject *released = PyObject_CallMethod(view, "release", NULL);
    Py_DECREF(view);
    if (released == NULL) {
        Py_XDECREF(hash);
        return NULL;
    }
    Py_DECREF(released);
    if (hash == NULL)
        return NULL;
    PyObject *digest = PyObject_CallMethod(hash, "digest", NULL);
    Py_DECREF(hash);
    return digest;
}
#endif

/* sha256_of(*parts): the SHA-256 of the parts (bytes) one after the other, without joining
 * them: the header hash of a signature is its signed fields then the DKIM-Signature field. */
static PyObject *sha256_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    for (Py_ssize_t k = 0; k < nargs; k++) {
        if (!PyBytes_Check(args[k])) {
            PyErr_Format(PyExc_TypeError, "sha256_of() takes bytes, not %.100s",
                         Py_TYPE(args[k])->tp_name);
            return NULL;
        }
    }
#if defined(MAILPRIME_OPENSSL)
    SHA256_CTX context;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_Init(&context);
    for (Py_ssize_t k = 0; k < nargs; k++)
        SHA256_Update(&context, PyBytes_AS_STRING(args[k]), (size_t)PyBytes_GET_SIZE(args[k]));
    SHA256_Final(md, &context);
    return PyBytes_FromStringAndSize((const char *)md, SHA256_DIGEST_LENGTH);
#else
    PyObject *hash = PyObject_CallNoArgs(sha256_constructor);
    if (hash == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < nargs; k++) {
        PyObject *done = PyObject_CallMethod(hash, "update", "O", args[k]);
        if (done == NULL) {
            Py_DECREF(hash);
            return NULL;
        }
        Py_DECREF(done);
    }
    PyObject *digest = PyObject_CallMethod(hash, "digest", NULL);
    Py_DECREF(hash);
    return digest;
#endif
}

#define STACK_BODY 16384

static PyObject *relaxed_body_digest(const char *body, Py_ssize_t n)
{
    const char *input = body;
    char *padded = NULL;
    if (n > 0 && !(n >= 2 && body[n - 2] == '\r' && body[n - 1] == '\n')) {
        padded = PyMem_Malloc((size_t)n + 2);
        if (padded == NULL)
            return PyErr_NoMemory();
        memcpy(padded, body, (size_t)n);
        padded[n] = '\r';
        padded[n + 1] = '\n';
        input = padded;
        n += 2;
    }
    /* Most bodies fit on the stack (a 10 KB newsletter): no allocation for them. */
    char on_stack[STACK_BODY];
    char *canon = n <= STACK_BODY ? on_stack : PyMem_Malloc((size_t)n);
    if (canon == NULL) {
        PyMem_Free(padded);
        return PyErr_NoMemory();
    }
    int changed = 0;
    Py_ssize_t end;
    if (n >= RELEASE_GIL_FROM) {
        /* `input` is the caller's bytes (kept alive by the call) or our copy; `canon` ours. */
        Py_BEGIN_ALLOW_THREADS
        end = relax_into(input, n, canon, &changed);
        Py_END_ALLOW_THREADS
    } else {
        end = relax_into(input, n, canon, &changed);
    }
    PyMem_Free(padded);
    while (end >= 2 && canon[end - 2] == '\r' && canon[end - 1] == '\n')
        end -= 2;
    if (end > 0)
        end += 2; /* the last content line keeps its CRLF */
    PyObject *digest = digest_of(canon, end);
    if (canon != on_stack)
        PyMem_Free(canon);
    return digest;
}

static PyObject *signing_input(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *message_obj, *names;
    if (!PyArg_ParseTuple(args, "SO!:signing_input", &message_obj, &PyTuple_Type, &names))
        return NULL;
    if (check_names(names) < 0)
        return NULL;
    const char *s = PyBytes_AS_STRING(message_obj);
    Py_ssize_t n = PyBytes_GET_SIZE(message_obj);
    /* dkim_canon.split_message: the header section ends with the CRLF before the empty line. */
    Py_ssize_t head_length, body_start;
    if (n >= 2 && s[0] == '\r' && s[1] == '\n') {
        head_length = 0;
        body_start = 2;
    } else {
        head_length = n;
        body_start = n;
        for (Py_ssize_t i = find_crlf(s, 0, n); i < n; i = find_crlf(s, i + 2, n)) {
            if (i + 3 < n && s[i + 2] == '\r' && s[i + 3] == '\n') {
                head_length = i + 2;
                body_start = i + 4;
                break;
            }
        }
    }
    PyObject *header = signed_header_of(s, head_length, names);
    if (header == NULL)
        return NULL;
    PyObject *bh = relaxed_body_digest(s + body_start, n - body_start);
    if (bh == NULL) {
        Py_DECREF(header);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(OOON)", PyTuple_GET_ITEM(header, 0),
                                     PyTuple_GET_ITEM(header, 1), PyTuple_GET_ITEM(header, 2),
                                     bh);
    Py_DECREF(header);
    return result;
}

/* ---- the DKIM-Signature field around the signature (message.dkim's templates) ---------------
 *
 * fill(template, data, t, bh64) is dkim._filled's work: the unsigned field of a key's template
 * (six bytes: the folded field cut before t=, between, after bh=, then its relaxed form cut the
 * same way) with t= and bh= filled in, and the SHA-256 its b= signs: `data` (the signed header
 * fields) then the relaxed field. b_value(signature) is the b= value in base64, folded as
 * dkim.signed_field folds it (75 characters after "\tb=", then 77 after each CRLF HTAB), with
 * the field's final CRLF. Both are held to the Python versions by tests.
 */

#define B_FIRST 75
#define B_NEXT 77

static PyObject *fill(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 6 ||
        !PyBytes_Check(args[1]) || !PyBytes_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "fill(template: 6-tuple of bytes, data: bytes, t: bytes, bh64: bytes)");
        return NULL;
    }
    PyObject *const *parts = &PyTuple_GET_ITEM(args[0], 0);
    for (int k = 0; k < 6; k++) {
        if (!PyBytes_Check(parts[k])) {
            PyErr_SetString(PyExc_TypeError, "the template holds bytes only");
            return NULL;
        }
    }
    PyObject *t = args[2], *bh64 = args[3];
    Py_ssize_t t_length = PyBytes_GET_SIZE(t), bh_length = PyBytes_GET_SIZE(bh64);
    PyObject *unsigned_field = PyBytes_FromStringAndSize(
        NULL, PyBytes_GET_SIZE(parts[0]) + t_length + PyBytes_GET_SIZE(parts[1]) + bh_length +
              PyBytes_GET_SIZE(parts[2]));
    if (unsigned_field == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(unsigned_field);
    PyObject *pieces[5] = {parts[0], t, parts[1], bh64, parts[2]};
    for (int k = 0; k < 5; k++) {
        memcpy(w, PyBytes_AS_STRING(pieces[k]), (size_t)PyBytes_GET_SIZE(pieces[k]));
        w += PyBytes_GET_SIZE(pieces[k]);
    }
    PyObject *relaxed[6] = {args[1], parts[3], t, parts[4], bh64, parts[5]};
    PyObject *digest = sha256_of(NULL, relaxed, 6);
    if (digest == NULL) {
        Py_DECREF(unsigned_field);
        return NULL;
    }
    return Py_BuildValue("(NN)", unsigned_field, digest);
}

static PyObject *b_value(PyObject *module, PyObject *arg)
{
    (void)module;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "b_value() takes bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    if (n > PY_SSIZE_T_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "signature too long");
        return NULL;
    }
    Py_ssize_t encoded = (n + 2) / 3 * 4;
    Py_ssize_t folds = encoded > B_FIRST ? (encoded - B_FIRST + B_NEXT - 1) / B_NEXT : 0;
    PyObject *result = PyBytes_FromStringAndSize(NULL, encoded + 3 * folds + 2);
    if (result == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(result);
    Py_ssize_t column = 0, line_width = B_FIRST; /* characters on this line of the value */
    for (Py_ssize_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        char quad[4] = {alphabet[v >> 18 & 63], alphabet[v >> 12 & 63],
                        i + 1 < n ? alphabet[v >> 6 & 63] : '=', i + 2 < n ? alphabet[v & 63] : '='};
        for (int k = 0; k < 4; k++) {
            if (column == line_width) {
                *w++ = '\r';
                *w++ = '\n';
                *w++ = '\t';
                column = 0;
                line_width = B_NEXT;
            }
            *w++ = quad[k];
            column++;
        }
    }
    *w++ = '\r';
    *w++ = '\n';
    return result;
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
    {"signing_input", signing_input, METH_VARARGS,
     "signing_input(message: bytes, names: tuple[bytes, ...], /) -> "
     "tuple[tuple[int, ...], bytes, bytes | None, bytes]\n\nsigned_header's three for the "
     "message's header section, and the SHA-256 of its relaxed canonical body (RFC 6376 3.4.4)."},
    {"sha256_of", (PyCFunction)(void (*)(void))sha256_of, METH_FASTCALL,
     "sha256_of(*parts: bytes) -> bytes\n\nThe SHA-256 digest of the parts one after the other."},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(template: tuple[bytes, ...], data: bytes, t: bytes, bh64: bytes, /) -> "
     "tuple[bytes, bytes]\n\nA key's DKIM-Signature template filled in, and the digest its b= "
     "signs."},
    {"b_value", b_value, METH_O,
     "b_value(signature: bytes, /) -> bytes\n\nThe b= value: base64, folded, with the CRLF."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_relaxed",
    "DKIM relaxed body canonicalization of complete lines, in C (see dkim_canon).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__relaxed(void)
{
#if !defined(MAILPRIME_OPENSSL)
    if (sha256_constructor == NULL) {
        PyObject *hashlib = PyImport_ImportModule("hashlib");
        if (hashlib == NULL)
            return NULL;
        sha256_constructor = PyObject_GetAttrString(hashlib, "sha256");
        Py_DECREF(hashlib);
        if (sha256_constructor == NULL)
            return NULL;
    }
#endif
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    /* Whether SHA-256 is OpenSSL's, called directly (else hashlib's): tests check the build. */
#if defined(MAILPRIME_OPENSSL)
    if (PyModule_AddIntConstant(module, "OPENSSL", 1) < 0) {
#else
    if (PyModule_AddIntConstant(module, "OPENSSL", 0) < 0) {
#endif
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

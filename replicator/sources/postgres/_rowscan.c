/* Compiled twin of replicator/sources/postgres/rowscan.py (which documents the contract; the two are tested
 * against each other on generated pgoutput messages). Plain row messages (insert, update without an old
 * tuple, delete; every value text or NULL) are appended column-wise to a Sink as raw bytes, with their op and
 * position; anything else stops the scan and is left to the caller. Built by scripts/build_ext.sh; when it is
 * missing the pure-Python twin is used.
 *
 * Memory: each column is an Arrow string array in the making (data, int32 offsets, validity bits), grown
 * by doubling. Nothing here touches a Python object without the GIL (the scan holds it throughout). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int32_t *offsets; /* rows + 1 entries */
    Py_ssize_t ocap;
    uint8_t *valid; /* NULL until the first null */
    Py_ssize_t vcap;  /* bytes */
    Py_ssize_t nulls;
} Column;

typedef struct {
    PyObject_HEAD
    Py_ssize_t width;   /* values a tuple of the relation carries */
    Py_ssize_t ncols;   /* schema columns (values appended per row) */
    Py_ssize_t *index;  /* schema column i <- tuple value index[i] (-1: NULL); NULL: the same order */
    Column *cols;       /* ncols value columns, then ops, then positions */
    Py_ssize_t rows;
    Py_ssize_t bytes;   /* sum of the appended messages' sizes */
    long long serial;   /* the transaction (a Begin's serial) rows may be appended for by ``scan`` */
    char prefix[17];    /* "<16 hex digits>." of that transaction's commit LSN */
    int has_prefix;
    const char **vptr;  /* scratch: one tuple's values */
    Py_ssize_t *vlen;   /* -1: NULL */
} Sink;

static int grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, Py_ssize_t unit) {
    if (need <= *cap) return 0;
    Py_ssize_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *p = PyMem_Realloc(*buf, (size_t)(n * unit));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = n;
    return 0;
}

static void column_clear(Column *c) {
    PyMem_Free(c->data);
    PyMem_Free(c->offsets);
    PyMem_Free(c->valid);
    memset(c, 0, sizeof(*c));
}

/* Append one value (ptr == NULL: NULL) as row ``row`` of the column. */
static int column_append(Column *c, Py_ssize_t row, const char *ptr, Py_ssize_t len) {
    if (grow((void **)&c->offsets, &c->ocap, row + 2, sizeof(int32_t)) < 0) return -1;
    if (row == 0) c->offsets[0] = 0;
    if (ptr == NULL) {
        if (c->valid == NULL || c->vcap * 8 < row + 1) {
            Py_ssize_t old = c->vcap;
            int fresh = c->valid == NULL;
            if (grow((void **)&c->valid, &c->vcap, row / 8 + 1, 1) < 0) return -1;
            if (fresh) {
                /* every row so far is valid */
                memset(c->valid, 0xFF, (size_t)c->vcap);
            } else {
                memset(c->valid + old, 0xFF, (size_t)(c->vcap - old));
            }
        }
        c->valid[row / 8] &= (uint8_t) ~(1u << (row % 8));
        c->nulls++;
    } else {
        if (c->len + len > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "column data over 2 GiB in one chunk");
            return -1;
        }
        if (grow((void **)&c->data, &c->cap, c->len + len, 1) < 0) return -1;
        memcpy(c->data + c->len, ptr, (size_t)len);
        c->len += len;
        if (c->valid != NULL && c->vcap * 8 < row + 1) {
            Py_ssize_t old = c->vcap;
            if (grow((void **)&c->valid, &c->vcap, row / 8 + 1, 1) < 0) return -1;
            memset(c->valid + old, 0xFF, (size_t)(c->vcap - old));
        }
    }
    c->offsets[row + 1] = (int32_t)c->len;
    return 0;
}

static void sink_reset(Sink *s) {
    for (Py_ssize_t i = 0; i < s->ncols + 2; i++) column_clear(&s->cols[i]);
    s->rows = 0;
    s->bytes = 0;
    s->serial = -1;
    s->has_prefix = 0;
}

static void Sink_dealloc(Sink *s) {
    if (s->cols != NULL) {
        for (Py_ssize_t i = 0; i < s->ncols + 2; i++) column_clear(&s->cols[i]);
    }
    PyMem_Free(s->cols);
    PyMem_Free(s->index);
    PyMem_Free(s->vptr);
    PyMem_Free(s->vlen);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int Sink_init(Sink *s, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"index", "width", NULL};
    PyObject *index = Py_None;
    Py_ssize_t width = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On", kwlist, &index, &width)) return -1;
    if (width < 0 || width > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "width out of range");
        return -1;
    }
    if (s->cols != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sink initialised twice");
        return -1;
    }
    s->width = width;
    s->ncols = width;
    if (index != Py_None) {
        PyObject *seq = PySequence_Fast(index, "index must be a sequence of ints or None");
        if (seq == NULL) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        s->index = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
        if (s->index == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t j = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
            if (j == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return -1;
            }
            if (j < -1 || j >= width) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_ValueError, "index entry out of range");
                return -1;
            }
            s->index[i] = j;
        }
        Py_DECREF(seq);
        s->ncols = n;
    }
    s->cols = PyMem_Calloc((size_t)(s->ncols + 2), sizeof(Column));
    s->vptr = PyMem_Calloc((size_t)(width ? width : 1), sizeof(char *));
    s->vlen = PyMem_Calloc((size_t)(width ? width : 1), sizeof(Py_ssize_t));
    if (s->cols == NULL || s->vptr == NULL || s->vlen == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->serial = -1;
    return 0;
}

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* The tuple of a plain row message into the sink's scratch: 1 when plain, 0 when not (or malformed). */
static int parse_plain(Sink *s, const unsigned char *d, Py_ssize_t n) {
    if (n < 6) return 0;
    unsigned char tag = d[0], flag = d[5];
    if (!((tag == 'I' && flag == 'N') || (tag == 'U' && flag == 'N') || (tag == 'D' && (flag == 'K' || flag == 'O'))))
        return 0;
    Py_ssize_t pos = 6;
    if (pos + 2 > n) return 0;
    Py_ssize_t count = ((Py_ssize_t)d[pos] << 8) | d[pos + 1];
    pos += 2;
    if (count != s->width) return 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        if (pos >= n) return 0;
        unsigned char kind = d[pos];
        if (kind == 't') {
            if (pos + 5 > n) return 0;
            uint32_t len = be32(d + pos + 1);
            if (len > (uint32_t)INT32_MAX || (Py_ssize_t)len > n - pos - 5) return 0;
            s->vptr[k] = (const char *)d + pos + 5;
            s->vlen[k] = (Py_ssize_t)len;
            pos += 5 + (Py_ssize_t)len;
        } else if (kind == 'n') {
            s->vptr[k] = NULL;
            s->vlen[k] = -1;
            pos += 1;
        } else {
            return 0; /* unchanged TOAST, binary or unknown: the full decoder's business */
        }
    }
    return 1;
}

/* Append the parsed scratch as one row with ``ordinal``: 0 on success, -1 with an exception set. */
static int append_row(Sink *s, const char *prefix, unsigned char tag, Py_ssize_t msg_len, long long ordinal) {
    Py_ssize_t row = s->rows;
    for (Py_ssize_t i = 0; i < s->ncols; i++) {
        Py_ssize_t j = s->index ? s->index[i] : i;
        const char *p = j >= 0 ? s->vptr[j] : NULL;
        Py_ssize_t l = j >= 0 ? s->vlen[j] : -1;
        if (column_append(&s->cols[i], row, p, l) < 0) return -1;
    }
    char op = (char)tag;
    if (column_append(&s->cols[s->ncols], row, &op, 1) < 0) return -1;
    char pos[29];
    memcpy(pos, prefix, 17);
    static const char hex[] = "0123456789ABCDEF";
    unsigned long long o = (unsigned long long)ordinal;
    for (int k = 28; k >= 17; k--) {
        pos[k] = hex[o & 0xF];
        o >>= 4;
    }
    if (column_append(&s->cols[s->ncols + 1], row, pos, 29) < 0) return -1;
    s->rows++;
    s->bytes += msg_len;
    return 0;
}

static int check_ordinal(long long ordinal) {
    if (ordinal < 0 || ordinal > 0xFFFFFFFFFFFFLL) {
        PyErr_SetString(PyExc_OverflowError, "ordinal does not fit 12 hex digits");
        return -1;
    }
    return 0;
}

static PyObject *Sink_begin(Sink *s, PyObject *args) {
    long long serial;
    const char *prefix;
    Py_ssize_t plen;
    if (!PyArg_ParseTuple(args, "Ls#", &serial, &prefix, &plen)) return NULL;
    if (plen != 17) {
        PyErr_SetString(PyExc_ValueError, "prefix must be 16 hex digits and a dot");
        return NULL;
    }
    memcpy(s->prefix, prefix, 17);
    s->has_prefix = 1;
    s->serial = serial;
    Py_RETURN_NONE;
}

static PyObject *Sink_add(Sink *s, PyObject *args) {
    Py_buffer buf;
    const char *prefix;
    Py_ssize_t plen;
    long long ordinal;
    if (!PyArg_ParseTuple(args, "y*s#L", &buf, &prefix, &plen, &ordinal)) return NULL;
    if (plen != 17) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "prefix must be 16 hex digits and a dot");
        return NULL;
    }
    if (check_ordinal(ordinal) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const unsigned char *d = buf.buf;
    if (!parse_plain(s, d, buf.len)) {
        PyBuffer_Release(&buf);
        Py_RETURN_FALSE;
    }
    int rc = append_row(s, prefix, d[0], buf.len, ordinal);
    PyBuffer_Release(&buf);
    if (rc < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *Sink_position(Sink *s, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0) i += s->rows;
    if (i < 0 || i >= s->rows) {
        PyErr_SetString(PyExc_IndexError, "row index out of range");
        return NULL;
    }
    Column *c = &s->cols[s->ncols + 1];
    return PyUnicode_FromStringAndSize(c->data + c->offsets[i], 29);
}

static PyObject *column_buffers(Column *c, Py_ssize_t rows) {
    PyObject *data = PyBytes_FromStringAndSize(c->data ? c->data : "", c->len);
    PyObject *offsets;
    if (rows == 0) {
        int32_t zero = 0;
        offsets = PyBytes_FromStringAndSize((const char *)&zero, sizeof(zero));
    } else {
        offsets = PyBytes_FromStringAndSize((const char *)c->offsets, (Py_ssize_t)((rows + 1) * sizeof(int32_t)));
    }
    PyObject *valid;
    if (c->nulls && c->valid != NULL) {
        valid = PyBytes_FromStringAndSize((const char *)c->valid, (rows + 7) / 8);
    } else {
        valid = Py_NewRef(Py_None);
    }
    if (data == NULL || offsets == NULL || valid == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(offsets);
        Py_XDECREF(valid);
        return NULL;
    }
    return Py_BuildValue("(NNNn)", data, offsets, valid, c->nulls);
}

/* The collected rows as Arrow buffers, then empty: a list of (data, offsets, validity or None, null count)
 * per schema column, then the ops column, then the positions column. */
static PyObject *Sink_take(Sink *s, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(s->ncols + 2);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < s->ncols + 2; i++) {
        PyObject *col = column_buffers(&s->cols[i], s->rows);
        if (col == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, col);
    }
    sink_reset(s);
    return out;
}

static PyObject *Sink_get_rows(Sink *s, void *closure) { return PyLong_FromSsize_t(s->rows); }
static PyObject *Sink_get_bytes(Sink *s, void *closure) { return PyLong_FromSsize_t(s->bytes); }
static PyObject *Sink_get_serial(Sink *s, void *closure) { return PyLong_FromLongLong(s->serial); }
static PyObject *Sink_get_ncols(Sink *s, void *closure) { return PyLong_FromSsize_t(s->ncols); }

static PyGetSetDef Sink_getset[] = {
    {"rows", (getter)Sink_get_rows, NULL, "rows collected", NULL},
    {"nbytes", (getter)Sink_get_bytes, NULL, "sum of their messages' sizes", NULL},
    {"serial", (getter)Sink_get_serial, NULL, "the transaction serial scan appends for (-1: none)", NULL},
    {"columns", (getter)Sink_get_ncols, NULL, "schema columns per row", NULL},
    {NULL},
};

static PyMethodDef Sink_methods[] = {
    {"begin", (PyCFunction)Sink_begin, METH_VARARGS, "begin(serial, prefix): scan appends rows of this transaction"},
    {"add", (PyCFunction)Sink_add, METH_VARARGS, "add(payload, prefix, ordinal) -> bool: append a plain row"},
    {"position", (PyCFunction)Sink_position, METH_O, "position(i) -> str"},
    {"take", (PyCFunction)Sink_take, METH_NOARGS, "take() -> column buffers; then empty"},
    {NULL},
};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "replicator.sources.postgres._rowscan.Sink",
    .tp_basicsize = sizeof(Sink),
    .tp_dealloc = (destructor)Sink_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One table's plain rows, column-wise (see rowscan.py).",
    .tp_methods = Sink_methods,
    .tp_getset = Sink_getset,
    .tp_init = (initproc)Sink_init,
    .tp_new = PyType_GenericNew,
};

/* scan(run, i, sinks, ordinal, serial, touched, limit, cap) -> (i, ordinal, full sink or None) */
static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *run, *sinks, *touched;
    Py_ssize_t i, limit, cap;
    long long ordinal, serial;
    if (!PyArg_ParseTuple(args, "O!nO!LLO!nn", &PyList_Type, &run, &i, &PyDict_Type, &sinks, &ordinal, &serial,
                          &PyList_Type, &touched, &limit, &cap))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(run);
    if (i < 0) i = 0;
    uint32_t last_rel = 0;
    Sink *last = NULL;
    PyObject *full = Py_None;
    for (; i < n; i++) {
        PyObject *msg = PyList_GET_ITEM(run, i);
        if (!PyBytes_CheckExact(msg)) break;
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(msg);
        Py_ssize_t len = PyBytes_GET_SIZE(msg);
        if (len < 6 || !(d[0] == 'I' || d[0] == 'U' || d[0] == 'D')) break;
        uint32_t rel = be32(d + 1);
        Sink *s;
        if (last != NULL && rel == last_rel) {
            s = last;
        } else {
            PyObject *key = PyLong_FromUnsignedLong(rel);
            if (key == NULL) return NULL;
            PyObject *found = PyDict_GetItemWithError(sinks, key);
            Py_DECREF(key);
            if (found == NULL) {
                if (PyErr_Occurred()) return NULL;
                break;
            }
            if (!PyObject_TypeCheck(found, &SinkType)) break;
            s = (Sink *)found;
            last = s;
            last_rel = rel;
        }
        if (s->serial != serial || !s->has_prefix) break;
        if (!parse_plain(s, d, len)) break;
        if (check_ordinal(ordinal + 1) < 0) return NULL;
        int was_empty = s->rows == 0;
        if (append_row(s, s->prefix, d[0], len, ordinal + 1) < 0) return NULL;
        ordinal++;
        if (was_empty && PyList_Append(touched, (PyObject *)s) < 0) return NULL;
        if (s->rows >= limit || s->bytes >= cap) {
            full = (PyObject *)s;
            i++;
            break;
        }
    }
    return Py_BuildValue("(nLO)", i, ordinal, full);
}

static PyMethodDef module_methods[] = {
    {"scan", scan, METH_VARARGS, "scan(run, i, sinks, ordinal, serial, touched, limit, cap) -> (i, ordinal, full)"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowscan", "Compiled twin of rowscan.py.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__rowscan(void) {
    if (PyType_Ready(&SinkType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Sink", (PyObject *)&SinkType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* Native record scan for the log cleaner (record batch v2, an uncompressed records section).
 *
 * The cleaner's hot loops, `scan_keys` (the offset map pass) and `filter_records` (the copy
 * pass; with no map it is `scan_records`), written in C because a Python loop cannot parse a
 * million 100-byte records a second. batch_filter.py holds the pure-Python versions, used when
 * this module is not built: both give the same result for every input, error messages included
 * (a ValueError here is a BadRecordsError there), which a property test checks on random
 * sections. So the parse below follows the Python one step by step: every read is bounded by
 * the section's end only, a length by its record's end, varints as Kafka's ByteUtils reads
 * them (at most 5 bytes and 32 bits; a varlong 10 bytes and 64 bits).
 *
 * Stateless; the caller holds the GIL (the cleaner runs in its own process).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static const char ERR_ENDS[] = "records section ends inside a record";
static const char ERR_LONG[] = "varint too long";
static const char ERR_RANGE[] = "varint out of range";
static const char ERR_LENGTH[] = "record length out of bounds";
static const char ERR_KEY[] = "key out of bounds";
static const char ERR_FIELDS[] = "record fields out of bounds";
static const char ERR_LEFT[] = "bytes left after the declared records";

/* A zigzag varint of at most `bits` bits (32 or 64) at *pos; NULL, or the error. */
static const char *read_varint(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, int bits,
                               int64_t *value)
{
    uint64_t result = 0;
    int shift = 0;
    for (;;) {
        if (*pos >= end)
            return ERR_ENDS;
        uint8_t byte = buf[(*pos)++];
        if (shift == 63 && (byte & 0x7F) > 1) {
            if (byte >= 0x80)
                return ERR_LONG;
            return ERR_RANGE;  /* bits beyond the 64th */
        }
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80)
            break;
        shift += 7;
        if (shift > bits)
            return ERR_LONG;
    }
    if (bits < 64 && (result >> bits) != 0)
        return ERR_RANGE;
    *value = (int64_t)(result >> 1) ^ -(int64_t)(result & 1);
    return NULL;
}

/* a + b as a Python int, exact even where int64 overflows (as Python's + is). */
static PyObject *sum_of(int64_t a, int64_t b)
{
    int64_t sum;
    if (!__builtin_add_overflow(a, b, &sum))
        return PyLong_FromLongLong(sum);
    PyObject *x = PyLong_FromLongLong(a), *y = PyLong_FromLongLong(b), *out = NULL;
    if (x != NULL && y != NULL)
        out = PyNumber_Add(x, y);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return out;
}

static PyObject *scan_keys(PyObject *self, PyObject *args)
{
    Py_buffer view;
    long long base_offset;
    int records_count;
    PyObject *into;
    if (!PyArg_ParseTuple(args, "y*LiO!", &view, &base_offset, &records_count, &PyDict_Type, &into))
        return NULL;
    const uint8_t *buf = view.buf;
    Py_ssize_t end = view.len, pos = 0;
    const char *error = NULL;
    for (int i = 0; i < records_count && error == NULL; i++) {
        int64_t size, skipped, offset_delta, key_len;
        if ((error = read_varint(buf, end, &pos, 32, &size)) != NULL)
            break;
        int64_t record_end = pos + size;
        if (size < 6 || record_end > end) {
            error = ERR_LENGTH;
            break;
        }
        pos += 1; /* attributes */
        if ((error = read_varint(buf, end, &pos, 64, &skipped)) != NULL ||
            (error = read_varint(buf, end, &pos, 32, &offset_delta)) != NULL ||
            (error = read_varint(buf, end, &pos, 32, &key_len)) != NULL)
            break;
        if (key_len >= 0) {
            if (pos + key_len > record_end) {
                error = ERR_KEY;
                break;
            }
            PyObject *key = PyBytes_FromStringAndSize((const char *)buf + pos, (Py_ssize_t)key_len);
            PyObject *offset = key != NULL ? sum_of(base_offset, offset_delta) : NULL;
            int failed = offset == NULL || PyDict_SetItem(into, key, offset) < 0;
            Py_XDECREF(key);
            Py_XDECREF(offset);
            if (failed) {
                PyBuffer_Release(&view);
                return NULL;
            }
        }
        pos = (Py_ssize_t)record_end;
    }
    PyBuffer_Release(&view);
    if (error == NULL && pos != end)
        error = ERR_LEFT;
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Is `newer` (a value of the map) greater than base_offset + offset_delta? -1 on error. */
static int is_newer(PyObject *newer, int64_t base_offset, int64_t offset_delta)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(newer, &overflow);
    int64_t offset;
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (!overflow && !__builtin_add_overflow(base_offset, offset_delta, &offset))
        return value > offset;
    PyObject *exact = sum_of(base_offset, offset_delta);
    if (exact == NULL)
        return -1;
    int result = PyObject_RichCompareBool(newer, exact, Py_GT);
    Py_DECREF(exact);
    return result;
}

/* A record_type (a tuple subclass: ScannedRecord) of the 7 fields, as tuple.__new__ makes it. */
static PyObject *new_record(PyTypeObject *record_type, Py_ssize_t start, int64_t record_end,
                            Py_ssize_t after_timestamp, PyObject *offset, PyObject *timestamp,
                            PyObject *key, int has_value)
{
    PyObject *items[7] = {
        PyLong_FromSsize_t(start), PyLong_FromLongLong(record_end),
        PyLong_FromSsize_t(after_timestamp), offset, timestamp, key, PyBool_FromLong(has_value),
    };
    PyObject *record = NULL;
    int complete = 1;
    for (int i = 0; i < 7; i++)
        complete = complete && items[i] != NULL;
    if (complete)
        record = record_type->tp_alloc(record_type, 7);
    if (record == NULL) {
        for (int i = 0; i < 7; i++)
            Py_XDECREF(items[i]);
        return NULL;
    }
    for (int i = 0; i < 7; i++)
        PyTuple_SET_ITEM(record, i, items[i]);
    return record;
}

static PyObject *filter_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    long long base_offset, base_timestamp, max_timestamp;
    int records_count, log_append_time, drop_tombstones;
    PyObject *latest, *record_type_obj;
    if (!PyArg_ParseTuple(args, "y*LiLLpOpO!", &view, &base_offset, &records_count, &base_timestamp,
                          &max_timestamp, &log_append_time, &latest, &drop_tombstones,
                          &PyType_Type, &record_type_obj))
        return NULL;
    PyTypeObject *record_type = (PyTypeObject *)record_type_obj;
    if (!PyType_IsSubtype(record_type, &PyTuple_Type) || (latest != Py_None && !PyDict_Check(latest))) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "filter_records: a dict or None, and a tuple type");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint8_t *buf = view.buf;
    Py_ssize_t end = view.len, pos = 0;
    const char *error = NULL;
    int tombstones = 0;
    for (int i = 0; i < records_count; i++) {
        int64_t size, ts_delta, offset_delta, key_len;
        Py_ssize_t start = pos;
        if ((error = read_varint(buf, end, &pos, 32, &size)) != NULL)
            break;
        int64_t record_end = pos + size;
        if (size < 6 || record_end > end) {
            error = ERR_LENGTH;
            break;
        }
        pos += 1; /* attributes */
        if ((error = read_varint(buf, end, &pos, 64, &ts_delta)) != NULL)
            break;
        Py_ssize_t after_timestamp = pos;
        if ((error = read_varint(buf, end, &pos, 32, &offset_delta)) != NULL ||
            (error = read_varint(buf, end, &pos, 32, &key_len)) != NULL)
            break;
        Py_ssize_t key_start = pos;
        if (key_len >= 0)
            pos += (Py_ssize_t)key_len;
        if (pos >= record_end) {
            error = ERR_FIELDS;
            break;
        }
        /* A null value's length is -1: the one-byte varint 0x01. */
        int has_value = buf[pos] != 0x01;
        pos = (Py_ssize_t)record_end;
        if (latest != Py_None && key_len < 0)
            continue; /* a compacted log has no use for a record without a key */
        PyObject *key = Py_None;
        if (key_len >= 0) {
            key = PyBytes_FromStringAndSize((const char *)buf + key_start, (Py_ssize_t)key_len);
            if (key == NULL)
                goto fail;
        } else {
            Py_INCREF(key);
        }
        if (latest != Py_None) {
            PyObject *newer = PyDict_GetItemWithError(latest, key);
            int drop = 0;
            if (newer != NULL)
                drop = is_newer(newer, base_offset, offset_delta);
            else if (PyErr_Occurred())
                drop = -1;
            if (drop == 0 && !has_value) {
                drop = drop_tombstones;
                tombstones = tombstones || !drop_tombstones;
            }
            if (drop != 0) {
                Py_DECREF(key);
                if (drop < 0)
                    goto fail;
                continue;
            }
        }
        PyObject *offset = sum_of(base_offset, offset_delta);
        PyObject *timestamp = log_append_time ? PyLong_FromLongLong(max_timestamp)
                                              : sum_of(base_timestamp, ts_delta);
        PyObject *record = new_record(record_type, start, record_end, after_timestamp, offset,
                                      timestamp, key, has_value);
        if (record == NULL)
            goto fail;
        int appended = PyList_Append(out, record);
        Py_DECREF(record);
        if (appended < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    if (error == NULL && pos != end)
        error = ERR_LEFT;
    if (error != NULL) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    return Py_BuildValue("(NO)", out, tombstones ? Py_True : Py_False);
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_keys", scan_keys, METH_VARARGS,
     "scan_keys(section, base_offset, records_count, into): map each keyed record's key to its offset."},
    {"filter_records", filter_records, METH_VARARGS,
     "filter_records(section, base_offset, records_count, base_timestamp, max_timestamp, "
     "log_append_time, latest, drop_tombstones, record_type) -> (records kept, tombstone kept)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_clean_scan",
    "Native record scan for the log cleaner (see batch_filter.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__clean_scan(void)
{
    return PyModule_Create(&module);
}

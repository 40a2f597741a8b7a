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
#include <string.h>

static const char ERR_ENDS[] = "records section ends inside a record";
static const char ERR_LONG[] = "varint too long";
static const char ERR_RANGE[] = "varint out of range";
static const char ERR_LENGTH[] = "record length out of bounds";
static const char ERR_KEY[] = "key out of bounds";
static const char ERR_FIELDS[] = "record fields out of bounds";
static const char ERR_LEFT[] = "bytes left after the declared records";
static const char ERR_OFFSET[] = "offset out of range";

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

/* ------------------------------------------------------------------ OffsetMap
 *
 * The cleaner's key -> offset map (Kafka's SkimpyOffsetMap, without its hash collisions):
 * open addressing over 64-bit hashes, the keys' bytes kept in one arena and compared in full
 * on a hash match, so it answers exactly as a dict of bytes would. The record loops below use
 * it without making a Python object per record; from Python it is a small mapping (`[k] = v`,
 * `get`, `len`, `items`). Offsets are int64, as every offset in a log is.
 */
typedef struct {
    uint64_t hash; /* 0: an empty slot */
    int64_t offset;
    size_t key_at;
    Py_ssize_t key_len;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t mask; /* capacity - 1; capacity a power of two, at most half full */
    Py_ssize_t size;
    char *arena;
    size_t arena_len, arena_cap;
} OffsetMap;

static PyTypeObject OffsetMapType;

static uint64_t hash_key(const uint8_t *key, Py_ssize_t len)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)len;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, key + i, 8);
        h = (h ^ word) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    uint64_t tail = 0;
    memcpy(&tail, key + i, (size_t)(len - i));
    h = (h ^ tail) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 29;
    return h | 1; /* never 0 */
}

static PyObject *offset_map_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (!PyArg_ParseTuple(args, ":OffsetMap"))
        return NULL;
    OffsetMap *self = (OffsetMap *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->slots = PyMem_Calloc(1024, sizeof(Slot));
    self->mask = 1023;
    if (self->slots == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void offset_map_dealloc(OffsetMap *self)
{
    PyMem_Free(self->slots);
    PyMem_Free(self->arena);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The slot holding `key`, or the empty slot where it would go. */
static Slot *find_slot(OffsetMap *self, const uint8_t *key, Py_ssize_t len, uint64_t hash)
{
    size_t i = (size_t)hash & self->mask;
    for (;;) {
        Slot *slot = &self->slots[i];
        if (slot->hash == 0 || (slot->hash == hash && slot->key_len == len &&
                                (len == 0 || memcmp(self->arena + slot->key_at, key, (size_t)len) == 0)))
            return slot;
        i = (i + 1) & self->mask;
    }
}

static int grow(OffsetMap *self)
{
    size_t capacity = (self->mask + 1) * 2;
    Slot *slots = PyMem_Calloc(capacity, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= self->mask; i++) {
        Slot *old = &self->slots[i];
        if (old->hash == 0)
            continue;
        size_t j = (size_t)old->hash & (capacity - 1);
        while (slots[j].hash != 0)
            j = (j + 1) & (capacity - 1);
        slots[j] = *old;
    }
    PyMem_Free(self->slots);
    self->slots = slots;
    self->mask = capacity - 1;
    return 0;
}

static int map_put(OffsetMap *self, const uint8_t *key, Py_ssize_t len, int64_t offset)
{
    uint64_t hash = hash_key(key, len);
    Slot *slot = find_slot(self, key, len, hash);
    if (slot->hash != 0) {
        slot->offset = offset;
        return 0;
    }
    if (self->arena_len + (size_t)len > self->arena_cap) {
        size_t cap = self->arena_cap ? self->arena_cap : 1 << 16;
        while (cap < self->arena_len + (size_t)len)
            cap *= 2;
        char *arena = PyMem_Realloc(self->arena, cap);
        if (arena == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->arena = arena;
        self->arena_cap = cap;
    }
    if (len > 0)
        memcpy(self->arena + self->arena_len, key, (size_t)len);
    slot->hash = hash;
    slot->offset = offset;
    slot->key_at = self->arena_len;
    slot->key_len = len;
    self->arena_len += (size_t)len;
    self->size++;
    if ((size_t)self->size * 2 > self->mask + 1)
        return grow(self);
    return 0;
}

/* The offset of `key`: 1 found, 0 not. */
static int map_get(OffsetMap *self, const uint8_t *key, Py_ssize_t len, int64_t *offset)
{
    Slot *slot = find_slot(self, key, len, hash_key(key, len));
    if (slot->hash == 0)
        return 0;
    *offset = slot->offset;
    return 1;
}

static Py_ssize_t offset_map_len(OffsetMap *self)
{
    return self->size;
}

static int offset_map_ass(OffsetMap *self, PyObject *key, PyObject *value)
{
    if (!PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "OffsetMap keys are bytes");
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "OffsetMap entries are never removed");
        return -1;
    }
    long long offset = PyLong_AsLongLong(value);
    if (offset == -1 && PyErr_Occurred())
        return -1;
    return map_put(self, (const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), offset);
}

static PyObject *offset_map_subscript(OffsetMap *self, PyObject *key)
{
    int64_t offset;
    if (!PyBytes_Check(key) ||
        !map_get(self, (const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), &offset)) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return PyLong_FromLongLong(offset);
}

static PyObject *offset_map_get(OffsetMap *self, PyObject *key)
{
    int64_t offset;
    if (!PyBytes_Check(key) ||
        !map_get(self, (const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), &offset))
        Py_RETURN_NONE;
    return PyLong_FromLongLong(offset);
}

static PyObject *offset_map_items(OffsetMap *self, PyObject *unused)
{
    PyObject *out = PyList_New(0);
    for (size_t i = 0; out != NULL && i <= self->mask; i++) {
        Slot *slot = &self->slots[i];
        if (slot->hash == 0)
            continue;
        /* The arena is NULL while every key is empty: y# would make None of it. */
        PyObject *item = Py_BuildValue("(y#L)", slot->key_len ? self->arena + slot->key_at : "",
                                       slot->key_len, (long long)slot->offset);
        if (item == NULL || PyList_Append(out, item) < 0)
            Py_CLEAR(out);
        Py_XDECREF(item);
    }
    return out;
}

static PyMappingMethods offset_map_mapping = {
    (lenfunc)offset_map_len, (binaryfunc)offset_map_subscript, (objobjargproc)offset_map_ass,
};

static PyMethodDef offset_map_methods[] = {
    {"get", (PyCFunction)offset_map_get, METH_O, "get(key) -> offset or None"},
    {"items", (PyCFunction)offset_map_items, METH_NOARGS, "items() -> [(key, offset)]"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OffsetMapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ackly.log._clean_scan.OffsetMap",
    .tp_basicsize = sizeof(OffsetMap),
    .tp_dealloc = (destructor)offset_map_dealloc,
    .tp_as_mapping = &offset_map_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The cleaner's key -> offset map: bytes keys, int64 offsets.",
    .tp_methods = offset_map_methods,
    .tp_new = offset_map_new,
};

static PyObject *scan_keys(PyObject *self, PyObject *args)
{
    Py_buffer view;
    long long base_offset;
    int records_count;
    PyObject *into;
    if (!PyArg_ParseTuple(args, "y*LiO", &view, &base_offset, &records_count, &into))
        return NULL;
    OffsetMap *map = Py_IS_TYPE(into, &OffsetMapType) ? (OffsetMap *)into : NULL;
    if (map == NULL && !PyDict_Check(into)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "scan_keys: into is a dict or an OffsetMap");
        return NULL;
    }
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
            if (map != NULL) {
                int64_t offset;
                if (__builtin_add_overflow(base_offset, offset_delta, &offset)) {
                    error = ERR_OFFSET;
                    break;
                }
                if (map_put(map, buf + pos, (Py_ssize_t)key_len, offset) < 0) {
                    PyBuffer_Release(&view);
                    return NULL;
                }
                pos = (Py_ssize_t)record_end;
                continue;
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
    OffsetMap *map = Py_IS_TYPE(latest, &OffsetMapType) ? (OffsetMap *)latest : NULL;
    if (!PyType_IsSubtype(record_type, &PyTuple_Type) ||
        (latest != Py_None && map == NULL && !PyDict_Check(latest))) {
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
        if (map != NULL) {
            /* Decided before any object is made: most records of a compacted log go here. */
            int64_t newer, offset;
            int drop = 0;
            if (map_get(map, buf + key_start, (Py_ssize_t)key_len, &newer)) {
                /* An offset past int64 either way is above or below every offset mapped. */
                if (__builtin_add_overflow(base_offset, offset_delta, &offset))
                    drop = offset_delta < 0;
                else
                    drop = newer > offset;
            }
            if (!drop && !has_value) {
                drop = drop_tombstones;
                tombstones = tombstones || !drop_tombstones;
            }
            if (drop)
                continue;
        }
        PyObject *key = Py_None;
        if (key_len >= 0) {
            key = PyBytes_FromStringAndSize((const char *)buf + key_start, (Py_ssize_t)key_len);
            if (key == NULL)
                goto fail;
        } else {
            Py_INCREF(key);
        }
        if (latest != Py_None && map == NULL) {
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
    if (PyType_Ready(&OffsetMapType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&OffsetMapType);
    if (PyModule_AddObject(m, "OffsetMap", (PyObject *)&OffsetMapType) < 0) {
        Py_DECREF(&OffsetMapType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
